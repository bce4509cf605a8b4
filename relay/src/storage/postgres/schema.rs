//! Versioned migrations of the PostgreSQL schema.
//!
//! Each migration runs once, in its own transaction, recorded in `sotto_schema`. Relay
//! processes starting together serialise on a session advisory lock, so exactly one
//! applies a migration and the others find it done. A database whose recorded version is
//! newer than this binary knows is refused: an old relay must not write a newer schema.

use tokio_postgres::Client;

use super::db;
use crate::storage::StoreError;

/// The session advisory lock key held while migrating ("sotto" in ASCII, version 1).
const MIGRATION_LOCK: i64 = 0x736f_7474_6f01;

/// `(version, SQL)`, in order. Never edit a migration that has shipped; add one.
const MIGRATIONS: &[(i32, &str)] = &[(1, V1), (2, V2), (3, V3), (4, V4), (5, V5), (6, V6)];

/// The newest schema version this binary knows.
pub const LATEST: i32 = 6;

const V1: &str = r#"
CREATE TABLE devices (
    key bytea PRIMARY KEY,
    name text NOT NULL,
    device_id text NOT NULL,
    created_at bigint NOT NULL,
    -- The last mailbox seq handed out for this device (seqs are per device; the row
    -- lock on this counter orders concurrent posts to one mailbox across processes).
    mailbox_head bigint NOT NULL DEFAULT 0,
    UNIQUE (name, device_id)
);
CREATE TABLE key_packages (
    id bigserial PRIMARY KEY,
    device bytea NOT NULL,
    ciphersuite integer NOT NULL,
    last_resort boolean NOT NULL,
    data bytea NOT NULL,
    not_before bigint NOT NULL,
    not_after bigint NOT NULL
);
CREATE INDEX key_packages_by_device ON key_packages (device, ciphersuite, last_resort, id);
CREATE INDEX key_packages_by_expiry ON key_packages (not_after);
CREATE TABLE mailbox_blobs (
    id bigserial PRIMARY KEY,
    sender bytea NOT NULL,
    sender_address text NOT NULL,
    post_id bytea NOT NULL,
    payload bytea NOT NULL,
    created_at bigint NOT NULL
);
CREATE TABLE mailbox (
    device bytea NOT NULL,
    seq bigint NOT NULL,
    blob bigint NOT NULL REFERENCES mailbox_blobs (id),
    created_at bigint NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE INDEX mailbox_by_blob ON mailbox (blob);
CREATE INDEX mailbox_by_age ON mailbox (created_at);
CREATE TABLE groups (
    id bytea PRIMARY KEY,
    epoch bigint NOT NULL,
    head bigint NOT NULL,
    pruned_through bigint NOT NULL,
    created_at bigint NOT NULL
);
CREATE TABLE group_members (
    group_id bytea NOT NULL,
    principal bytea NOT NULL,
    added_seq bigint NOT NULL,
    removed_seq bigint,
    cursor bigint NOT NULL,
    PRIMARY KEY (group_id, principal)
);
CREATE TABLE group_log (
    group_id bytea NOT NULL,
    seq bigint NOT NULL,
    epoch bigint NOT NULL,
    content_type smallint NOT NULL,
    sender bytea NOT NULL,
    post_id bytea NOT NULL,
    message bytea NOT NULL,
    created_at bigint NOT NULL,
    PRIMARY KEY (group_id, seq)
);
CREATE INDEX group_log_by_age ON group_log (created_at);
-- Idempotency records: kind 0 = mailbox (scope empty), 1 = group (scope = group id).
-- `result` is [seq, epoch] for a group post, the recipients' seqs for a mailbox post.
CREATE TABLE posts (
    principal bytea NOT NULL,
    kind smallint NOT NULL,
    scope bytea NOT NULL,
    post_id bytea NOT NULL,
    result bigint[],
    created_at bigint NOT NULL,
    PRIMARY KEY (principal, kind, scope, post_id)
);
CREATE INDEX posts_by_age ON posts (created_at);

-- The group append under the epoch rule, in one round trip. The group row is locked
-- first (FOR UPDATE): every append to one group, from any relay process, runs after the
-- previous one committed, so the idempotency check, the membership check, the epoch
-- comparison, the insert and the access-list delta all see the committed state.
-- outcome: 0 accepted (seq, epoch), 1 conflict (head, current epoch), 2 not a member,
-- 3 unknown group, 4 accepted earlier under this post id (seq, epoch).
CREATE FUNCTION sotto_append_group(
    p_group bytea, p_sender bytea, p_post bytea, p_epoch bigint, p_ct smallint,
    p_msg bytea, p_added bytea[], p_removed bytea[], p_now bigint, p_is_commit boolean)
RETURNS TABLE (outcome smallint, r_seq bigint, r_epoch bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    g_epoch bigint;
    g_head bigint;
    prior bigint[];
    new_seq bigint;
    new_epoch bigint;
BEGIN
    SELECT g.epoch, g.head INTO g_epoch, g_head FROM groups g WHERE g.id = p_group FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 3::smallint, 0::bigint, 0::bigint;
        RETURN;
    END IF;
    SELECT p.result INTO prior FROM posts p
        WHERE p.principal = p_sender AND p.kind = 1 AND p.scope = p_group AND p.post_id = p_post;
    IF FOUND THEN
        RETURN QUERY SELECT 4::smallint, prior[1], prior[2];
        RETURN;
    END IF;
    PERFORM 1 FROM group_members m
        WHERE m.group_id = p_group AND m.principal = p_sender AND m.removed_seq IS NULL;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 2::smallint, 0::bigint, 0::bigint;
        RETURN;
    END IF;
    IF p_epoch <> g_epoch THEN
        RETURN QUERY SELECT 1::smallint, g_head, g_epoch;
        RETURN;
    END IF;
    new_seq := g_head + 1;
    new_epoch := CASE WHEN p_is_commit THEN g_epoch + 1 ELSE g_epoch END;
    UPDATE groups SET epoch = new_epoch, head = new_seq WHERE id = p_group AND epoch = p_epoch;
    INSERT INTO group_log (group_id, seq, epoch, content_type, sender, post_id, message, created_at)
        VALUES (p_group, new_seq, p_epoch, p_ct, p_sender, p_post, p_msg, p_now);
    IF p_is_commit THEN
        UPDATE group_members SET removed_seq = new_seq
            WHERE group_id = p_group AND principal = ANY (p_removed) AND removed_seq IS NULL;
        -- A new member reads from the entry after the commit that added it; re-adding a
        -- removed principal starts a new membership.
        INSERT INTO group_members (group_id, principal, added_seq, removed_seq, cursor)
            SELECT DISTINCT p_group, a, new_seq, NULL::bigint, new_seq FROM unnest(p_added) a
            ON CONFLICT (group_id, principal) DO UPDATE
            SET added_seq = excluded.added_seq, removed_seq = NULL, cursor = excluded.cursor
            WHERE group_members.removed_seq IS NOT NULL;
    END IF;
    INSERT INTO posts (principal, kind, scope, post_id, result, created_at)
        VALUES (p_sender, 1, p_group, p_post, ARRAY[new_seq, new_epoch], p_now);
    RETURN QUERY SELECT 0::smallint, new_seq, new_epoch;
END
$fn$;

-- A mailbox post in one round trip. unknown >= 0: that recipient (0-based) is not
-- registered and nothing was stored. Otherwise seqs are the recipients' mailbox seqs
-- and keys their device keys (empty keys: a repeat of an earlier post).
CREATE FUNCTION sotto_post_mailbox(
    p_sender bytea, p_address text, p_post bytea, p_names text[], p_devices text[],
    p_payload bytea, p_now bigint)
RETURNS TABLE (unknown integer, seqs bigint[], keys bytea[])
LANGUAGE plpgsql AS $fn$
DECLARE
    prior bigint[];
    ks bytea[] := '{}';
    k bytea;
    blob_id bigint;
    s bigint;
    out_seqs bigint[] := '{}';
    n integer := coalesce(array_length(p_names, 1), 0);
BEGIN
    SELECT p.result INTO prior FROM posts p
        WHERE p.principal = p_sender AND p.kind = 0 AND p.scope = '\x'::bytea AND p.post_id = p_post;
    IF FOUND THEN
        RETURN QUERY SELECT -1, prior, '{}'::bytea[];
        RETURN;
    END IF;
    FOR i IN 1 .. n LOOP
        SELECT d.key INTO k FROM devices d WHERE d.name = p_names[i] AND d.device_id = p_devices[i];
        IF NOT FOUND THEN
            RETURN QUERY SELECT i - 1, '{}'::bigint[], '{}'::bytea[];
            RETURN;
        END IF;
        ks := ks || k;
    END LOOP;
    -- Claim the post id; a concurrent twin through another process waits here for this
    -- transaction and then finds the row.
    INSERT INTO posts (principal, kind, scope, post_id, result, created_at)
        VALUES (p_sender, 0, '\x'::bytea, p_post, NULL, p_now)
        ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        SELECT p.result INTO prior FROM posts p
            WHERE p.principal = p_sender AND p.kind = 0 AND p.scope = '\x'::bytea AND p.post_id = p_post;
        RETURN QUERY SELECT -1, prior, '{}'::bytea[];
        RETURN;
    END IF;
    INSERT INTO mailbox_blobs (sender, sender_address, post_id, payload, created_at)
        VALUES (p_sender, p_address, p_post, p_payload, p_now) RETURNING id INTO blob_id;
    FOR i IN 1 .. n LOOP
        UPDATE devices SET mailbox_head = mailbox_head + 1 WHERE key = ks[i]
            RETURNING mailbox_head INTO s;
        INSERT INTO mailbox (device, seq, blob, created_at) VALUES (ks[i], s, blob_id, p_now);
        out_seqs := out_seqs || s;
    END LOOP;
    UPDATE posts SET result = out_seqs
        WHERE principal = p_sender AND kind = 0 AND scope = '\x'::bytea AND post_id = p_post;
    RETURN QUERY SELECT -1, out_seqs, ks;
END
$fn$;
"#;

/// Invitations of an invite-only relay: uses per invitation nonce.
const V2: &str = "
CREATE TABLE invite_uses (
    nonce bytea PRIMARY KEY,
    uses integer NOT NULL,
    last_used_at bigint NOT NULL
);
";

/// Token buckets of the per-principal limits (key-package claims) shared by every relay
/// process on the database; time is the database's clock, so the processes' clocks
/// need not agree.
const V3: &str = "
CREATE TABLE rate_buckets (
    bucket text NOT NULL,
    key bytea NOT NULL,
    tokens double precision NOT NULL,
    at_ms bigint NOT NULL,
    PRIMARY KEY (bucket, key)
);
CREATE INDEX rate_buckets_by_age ON rate_buckets (at_ms);
";

/// The active install of each device (the takeover of a restored backup).
const V4: &str = "
CREATE TABLE installs (
    device bytea PRIMARY KEY,
    install_id bytea NOT NULL,
    since bigint NOT NULL
);
";

/// Each group's latest GroupInfo, posted with a commit (the resync of a restored install).
const V5: &str = "
CREATE TABLE group_infos (
    group_id bytea PRIMARY KEY,
    epoch bigint NOT NULL,
    seq bigint NOT NULL,
    data bytea NOT NULL
);
";

/// The group append with an order precondition (`PostGroupAfter`): outcome 5 when the
/// sender's post `p_after` is not in the group's log, checked where SQLite checks it
/// (after the unknown-group, idempotency and membership checks, before the epoch rule);
/// otherwise exactly `sotto_append_group`. The group row is locked first, as there.
const V6: &str = r#"
CREATE FUNCTION sotto_append_group_after(
    p_group bytea, p_sender bytea, p_post bytea, p_epoch bigint, p_ct smallint,
    p_msg bytea, p_added bytea[], p_removed bytea[], p_now bigint, p_is_commit boolean,
    p_after bytea)
RETURNS TABLE (outcome smallint, r_seq bigint, r_epoch bigint)
LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_after IS NOT NULL THEN
        PERFORM 1 FROM groups g WHERE g.id = p_group FOR UPDATE;
        IF FOUND THEN
            PERFORM 1 FROM posts p WHERE p.principal = p_sender AND p.kind = 1
                AND p.scope = p_group AND p.post_id = p_post;
            IF NOT FOUND THEN
                PERFORM 1 FROM group_members m WHERE m.group_id = p_group
                    AND m.principal = p_sender AND m.removed_seq IS NULL;
                IF FOUND THEN
                    PERFORM 1 FROM posts p WHERE p.principal = p_sender AND p.kind = 1
                        AND p.scope = p_group AND p.post_id = p_after;
                    IF NOT FOUND THEN
                        RETURN QUERY SELECT 5::smallint, 0::bigint, 0::bigint;
                        RETURN;
                    END IF;
                END IF;
            END IF;
        END IF;
    END IF;
    RETURN QUERY SELECT * FROM sotto_append_group(p_group, p_sender, p_post, p_epoch, p_ct,
        p_msg, p_added, p_removed, p_now, p_is_commit);
END
$fn$;
"#;

/// Applies every missing migration; refuses a schema newer than [`LATEST`].
/// Returns the version in force afterwards.
pub async fn migrate(client: &mut Client) -> Result<i32, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| db("taking the migration lock", e))?;
    let result = apply(client).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn apply(client: &mut Client) -> Result<i32, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS sotto_schema (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(|e| db("creating sotto_schema", e))?;
    let current: i32 = client
        .query_one("SELECT coalesce(max(version), 0) FROM sotto_schema", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| db("reading the schema version", e))?;
    if current > LATEST {
        return Err(StoreError::Setup(format!(
            "the database has relay schema version {current}, newer than the {LATEST} this sotto-relay knows: upgrade sotto-relay (it never downgrades a schema)"
        )));
    }
    for &(version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = client
            .transaction()
            .await
            .map_err(|e| db("beginning a migration", e))?;
        tx.batch_execute(sql)
            .await
            .map_err(|e| db("applying a migration", e))?;
        tx.execute(
            "INSERT INTO sotto_schema (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(|e| db("recording a migration", e))?;
        tx.commit()
            .await
            .map_err(|e| db("committing a migration", e))?;
        tracing::info!(version, "applied relay schema migration");
    }
    Ok(LATEST.max(current))
}
