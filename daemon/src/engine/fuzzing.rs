//! The harness of the `mls_group_entry` and `mls_welcome` fuzz targets (fuzz/): hostile
//! MLS input from the relay — a member or an outsider posting crafted ciphertext, commits
//! and proposals into a group log, or a crafted Welcome into a mailbox — fed to the
//! daemon's real handling ([`inbound::process`], `welcome::join`) on its real database.
//!
//! The state is built once, by the daemon's own code, and kept in git as a fixture
//! (`fuzz/fixtures/mls/bob.db`, a plain SQLite copy of one member's database; the harness
//! opens a temporary copy with [`Store::open`], which encrypts it as on any start): Bob is
//! in a three-member group with Alice and Carol at epoch 2, has a message of his own in
//! flight and unused key packages (classical and post-quantum). The seeds in
//! `fuzz/corpus/<target>/` are real messages made by the other members at that state
//! (application messages, commits of every kind, a proposal, an outsider's look-alikes,
//! Welcomes), so libFuzzer mutates structured input. Every input runs in one transaction
//! that is rolled back, so every input meets the same state.
//!
//! What must hold for every input (a panic is a finding):
//! - processing returns `Ok` (an error would make the actor, or the mailbox follower,
//!   retry the same entry forever);
//! - an input that is not one of the real, fresh messages of the fixture changes nothing:
//!   no MLS state, no message, no member, no outbox row; except that a failing entry the
//!   relay says is a commit marks the conversation broken (the code's intent: the relay
//!   accepted it as the epoch's winning commit, so the group cannot go on without it);
//!   Bob's own entry (his key as sender) may only settle the post it names;
//! - the group the engine keeps in memory matches the one in storage;
//! - a Welcome is joined only for a group of the fixture, with exactly its members.
//!
//! `write_fixture` builds the fixture and the seeds (`cargo test -p sottod --lib
//! write_mls_fuzz_fixture -- --ignored`); the kept inputs replay under `cargo test`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use openmls::prelude::*;
use rusqlite::params;
use rusqlite::types::ValueRef;
use sha2::{Digest as _, Sha256};
use sotto_protocol::relay::{
    GroupEntry, MailboxEntry, MailboxPayload, WelcomeEnvelope, content_type,
};
use sotto_protocol::wire;
use tokio::runtime::Runtime;

use super::outbound::{self, Claimed, MembersPayload, MessagePayload, RenamePayload};
use super::{inbound, keypackages, welcome};
use crate::keys::{DbKey, DeviceKey};
use crate::mls::{self, Provider};
use crate::store::{Db, Store, StoreError, Tx};

/// The relay every member uses.
const RELAY: &str = "wss://relay.test";
/// The key of the temporary encrypted copy of the fixture (the fixture itself is plain).
const DB_KEY: [u8; 32] = [0x5a; 32];
/// The group of the fixture.
const GROUP: [u8; 16] = *b"sotto-fuzz-group";
/// The error a trial returns to roll its transaction back.
const ROLLBACK: &str = "fuzz harness: roll back";

/// A member: name, device key seed.
#[derive(Debug, Clone, Copy)]
struct Who {
    name: &'static str,
    seed: u8,
}

const ALICE: Who = Who {
    name: "alice",
    seed: 1,
};
const BOB: Who = Who {
    name: "bob",
    seed: 2,
};
const CAROL: Who = Who {
    name: "carol",
    seed: 3,
};
const DAVE: Who = Who {
    name: "dave",
    seed: 4,
};
/// Not in any of Bob's groups.
const EVE: Who = Who {
    name: "eve",
    seed: 5,
};

impl Who {
    fn address(self) -> String {
        format!("{}@relay.test", self.name)
    }

    fn device(self) -> String {
        format!("{}-device", self.name)
    }

    fn key(self) -> DeviceKey {
        DeviceKey::from_seed(&[self.seed; 32]).expect("a 32-byte seed")
    }

    fn public_key(self) -> [u8; 32] {
        self.key().public_key()
    }
}

/// Where the fixture and the corpora live.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn fixture_dir() -> PathBuf {
    fuzz_dir().join("fixtures/mls")
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime")
}

fn call<T, F>(rt: &Runtime, store: &Store, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(&mut Db) -> Result<T, StoreError> + Send + 'static,
{
    rt.block_on(store.call(f)).expect("a harness database call")
}

/// Runs `f` in a write transaction that is rolled back afterwards. A panic in `f` is
/// caught after the rollback (the database stays usable) and returned.
fn in_rolled_back_tx<T>(db: &mut Db, f: impl FnOnce(&mut Tx<'_>) -> T) -> std::thread::Result<T> {
    let mut out = None;
    let r = db.write(|tx| {
        out = Some(std::panic::catch_unwind(std::panic::AssertUnwindSafe(
            || f(tx),
        )));
        Err::<(), _>(StoreError::Decode(ROLLBACK.into()))
    });
    match r {
        Err(StoreError::Decode(m)) if m == ROLLBACK => {}
        other => panic!("the harness transaction did not roll back: {other:?}"),
    }
    out.expect("the transaction body ran")
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

// ---------------------------------------------------------------------------------------
// Snapshots of the database, to tell "nothing changed" from a change.

/// Every row of every table but the event log, by table; the conversations' cursor and
/// acknowledged seq are left out (every processed entry moves them).
type Snapshot = BTreeMap<String, Vec<String>>;

fn snapshot(conn: &rusqlite::Connection) -> Snapshot {
    let tables: Vec<String> = {
        let mut st = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> 'events' ORDER BY name",
            )
            .expect("list tables");
        st.query_map([], |r| r.get(0))
            .expect("list tables")
            .collect::<Result<_, _>>()
            .expect("list tables")
    };
    let mut out = Snapshot::new();
    for t in tables {
        let mut st = conn
            .prepare(&format!("SELECT * FROM \"{t}\""))
            .expect("read a table");
        let names: Vec<String> = st.column_names().iter().map(|s| s.to_string()).collect();
        let mut rows: Vec<String> = st
            .query_map([], |r| {
                let mut line = String::new();
                for (i, name) in names.iter().enumerate() {
                    if t == "conversations" && (name == "cursor" || name == "acked") {
                        continue;
                    }
                    let v = match r.get_ref(i)? {
                        ValueRef::Null => "NULL".to_owned(),
                        ValueRef::Integer(n) => n.to_string(),
                        ValueRef::Real(f) => f.to_string(),
                        ValueRef::Text(s) => format!("{:?}", String::from_utf8_lossy(s)),
                        ValueRef::Blob(b) => hex::encode(b),
                    };
                    line.push_str(name);
                    line.push('=');
                    line.push_str(&v);
                    line.push(' ');
                }
                Ok(line)
            })
            .expect("read a table")
            .collect::<Result<_, _>>()
            .expect("read a table");
        rows.sort();
        out.insert(t, rows);
    }
    out
}

fn is_mls_table(name: &str) -> bool {
    name.starts_with("openmls_") || name.contains("vc_")
}

/// The tables in which `a` and `b` differ (restricted by `filter`).
fn changed(a: &Snapshot, b: &Snapshot, filter: impl Fn(&str) -> bool) -> Vec<String> {
    let names: HashSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out: Vec<String> = names
        .into_iter()
        .filter(|n| filter(n))
        .filter(|n| a.get(*n) != b.get(*n))
        .cloned()
        .collect();
    out.sort();
    out
}

fn conversation_state(conn: &rusqlite::Connection, conv: &str) -> Option<String> {
    conn.query_row(
        "SELECT state FROM conversations WHERE id = ?1",
        [conv],
        |r| r.get(0),
    )
    .ok()
}

fn cursor(conn: &rusqlite::Connection, conv: &str) -> u64 {
    conn.query_row(
        "SELECT cursor FROM conversations WHERE id = ?1",
        [conv],
        |r| r.get::<_, i64>(0),
    )
    .map(|c| c as u64)
    .expect("the fixture's conversation")
}

/// What identifies a group's state.
#[derive(Debug, PartialEq, Eq)]
struct GroupSummary {
    epoch: u64,
    authenticator: Vec<u8>,
    members: Vec<(u32, Vec<u8>)>,
    pending_proposals: usize,
    pending_commit: bool,
    own_leaf: u32,
}

fn summary(g: &MlsGroup) -> GroupSummary {
    GroupSummary {
        epoch: g.epoch().as_u64(),
        authenticator: g.epoch_authenticator().as_slice().to_vec(),
        members: g
            .members()
            .map(|m| (m.index.u32(), m.signature_key))
            .collect(),
        pending_proposals: g.pending_proposals().count(),
        pending_commit: g.pending_commit().is_some(),
        own_leaf: g.own_leaf_index().u32(),
    }
}

/// The group kept in memory (if any) must be the one in storage.
fn check_kept_group(tx: &mut Tx<'_>, conv: &str) {
    let Some(kept) = tx.take_kept::<MlsGroup>(&outbound::group_key(conv)) else {
        return;
    };
    let provider = Provider::new(tx.conn());
    let stored = MlsGroup::load(provider.storage(), &GroupId::from_slice(&GROUP))
        .expect("load the group")
        .expect("a kept group is in storage");
    assert_eq!(
        summary(&kept),
        summary(&stored),
        "the group kept in memory differs from the stored one"
    );
    outbound::keep_group(tx, conv, kept);
}

// ---------------------------------------------------------------------------------------
// The harness.

/// The loaded fixture: Bob's database and what the manifest says about it.
struct Harness {
    rt: Runtime,
    store: Store,
    conv: String,
    /// The post id of Bob's prepared message.
    own_post_id: [u8; 16],
    /// Real messages Bob has not processed yet (SHA-256 of their bytes).
    fresh: HashSet<[u8; 32]>,
    /// The groups of the real Welcomes Bob can join, with their members' addresses.
    welcomes: Vec<(Vec<u8>, Vec<String>)>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("conv", &self.conv)
            .finish_non_exhaustive()
    }
}

/// A caught panic, carried back from the writer thread.
struct PanicPayload(Box<dyn std::any::Any + Send>);

impl std::fmt::Debug for PanicPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PanicPayload")
    }
}

static HARNESS: OnceLock<Mutex<Harness>> = OnceLock::new();

fn harness() -> std::sync::MutexGuard<'static, Harness> {
    HARNESS
        .get_or_init(|| Mutex::new(Harness::load()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// A private temporary directory per process; those of processes that are gone are
/// removed first.
fn temp_dir() -> PathBuf {
    let base = std::env::temp_dir();
    if let Ok(dir) = std::fs::read_dir(&base) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("sotto-fuzz-mls-")
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = base.join(format!("sotto-fuzz-mls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

impl Harness {
    fn load() -> Harness {
        let fixture = fixture_dir();
        let manifest = std::fs::read_to_string(fixture.join("manifest.txt")).expect(
            "fuzz/fixtures/mls/manifest.txt (write it: cargo test -p sottod --lib write_mls_fuzz_fixture -- --ignored)",
        );
        let dir = temp_dir();
        let db = dir.join("bob.db");
        std::fs::copy(fixture.join("bob.db"), &db).expect("copy fuzz/fixtures/mls/bob.db");
        let key = DbKey::from_bytes(&DB_KEY).expect("a 32-byte key");
        let store = Store::open(&db, &key, tokio::sync::broadcast::channel(16).0, 1000)
            .expect("open the fixture");
        let rt = runtime();
        let conv = hex::encode(GROUP);
        let id = conv.clone();
        let own_post_id: [u8; 16] = call(&rt, &store, move |db| {
            Ok(db.conn().query_row(
                "SELECT post_id FROM outbox WHERE conversation = ?1 AND op = 'message'",
                [&id],
                |r| r.get::<_, Vec<u8>>(0),
            )?)
        })
        .try_into()
        .expect("a 16-byte post id");
        let mut fresh = HashSet::new();
        let mut welcomes = Vec::new();
        for line in manifest.lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("fresh"), Some(h)) => {
                    let h: [u8; 32] = hex::decode(h)
                        .ok()
                        .and_then(|b| b.try_into().ok())
                        .expect("a SHA-256 in the manifest");
                    fresh.insert(h);
                }
                (Some("welcome"), Some(g)) => {
                    let members = words.map(str::to_owned).collect();
                    welcomes.push((hex::decode(g).expect("a group id"), members));
                }
                _ => {}
            }
        }
        Harness {
            rt,
            store,
            conv,
            own_post_id,
            fresh,
            welcomes,
        }
    }

    /// Runs `f` in a rolled-back transaction on the writer thread; a panic in it is
    /// raised again here (so the writer thread lives on).
    fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Tx<'_>) -> T + Send + 'static) -> T {
        let r = call(&self.rt, &self.store, move |db| {
            Ok(in_rolled_back_tx(db, f).map_err(PanicPayload))
        });
        match r {
            Ok(v) => v,
            Err(PanicPayload(p)) => std::panic::resume_unwind(p),
        }
    }
}

/// What one input did, for the tests that check the seeds do what they were made for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Texts of the messages received.
    pub received: Vec<String>,
    /// The group's epoch afterwards.
    pub epoch: u64,
    /// The conversation's state afterwards (`active`, `broken`, `removed`, ...).
    pub state: String,
    /// Pending proposals stored.
    pub proposals: usize,
    /// Whether Bob's message in flight is now sent.
    pub own_sent: bool,
    /// Whether a resync is scheduled (`engine::resync`).
    pub resync: bool,
    /// The conversation joined from a Welcome.
    pub joined: Option<String>,
}

/// One record of a `mls_group_entry` input: a selector byte, a big-endian u16 length and
/// that many bytes of MLS message (fewer at the end of the input).
///
/// Selector bits 0-1: the relay-authenticated sender (Alice, Carol, Bob himself, Eve the
/// outsider); bits 2-3: the content type the relay states (application, commit, proposal,
/// an unknown 0); bit 4: the post id is the one of Bob's message in flight (else zero);
/// bit 5: the entry's seq is one already processed (else the next one).
fn records(data: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((&sel, tail)) = rest.split_first()
        && out.len() < 4
    {
        let Some((len, tail)) = tail.split_first_chunk::<2>() else {
            break;
        };
        let n = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        out.push((sel, bytes));
        rest = next;
    }
    out
}

/// Encodes records as [`records`] reads them.
fn encode_records(records: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (sel, bytes) in records {
        out.push(*sel);
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

const SENDERS: [Who; 4] = [ALICE, CAROL, BOB, EVE];
const SEL_ALICE: u8 = 0;
const SEL_CAROL: u8 = 1;
const SEL_BOB: u8 = 2;
const SEL_EVE: u8 = 3;
const SEL_APPLICATION: u8 = 0;
const SEL_COMMIT: u8 = 1 << 2;
const SEL_PROPOSAL: u8 = 2 << 2;
const SEL_OWN_POST: u8 = 1 << 4;
const SEL_OLD_SEQ: u8 = 1 << 5;

/// The `mls_group_entry` target: entries of the fixture group's log from the relay.
pub fn group_entries(data: &[u8]) {
    let _ = group_entries_report(data);
}

/// [`group_entries`], saying what the input did.
pub fn group_entries_report(data: &[u8]) -> Report {
    let data = data.to_vec();
    let h = harness();
    let (conv, own_post_id, fresh) = (h.conv.clone(), h.own_post_id, h.fresh.clone());
    h.run(move |tx| {
        {
            let mut fresh = fresh;
            let mut report = Report::default();
            for (sel, message) in records(&data) {
                let sender = SENDERS[usize::from(sel & 3)];
                let stated = match (sel >> 2) & 3 {
                    0 => content_type::APPLICATION,
                    1 => content_type::COMMIT,
                    2 => content_type::PROPOSAL,
                    _ => 0,
                };
                let post_id = if sel & SEL_OWN_POST != 0 {
                    own_post_id
                } else {
                    [0; 16]
                };
                let at = cursor(tx.conn(), &conv);
                let entry = GroupEntry {
                    seq: if sel & SEL_OLD_SEQ != 0 { at } else { at + 1 },
                    epoch: 0,
                    content_type: stated,
                    sender: sender.public_key(),
                    post_id,
                    message: message.to_vec(),
                };
                let before = snapshot(tx.conn());
                let outcome = inbound::process(
                    tx,
                    &conv,
                    &BOB.address(),
                    &BOB.public_key(),
                    &entry,
                )
                .unwrap_or_else(|e| {
                    panic!("processing an entry failed (the actor would retry it forever): {e}")
                });
                check_kept_group(tx, &conv);
                let after = snapshot(tx.conn());
                let state = conversation_state(tx.conn(), &conv).unwrap_or_default();
                let is_fresh = fresh.remove(&sha(message));
                let all = changed(&before, &after, |_| true);
                let mls_changed = changed(&before, &after, is_mls_table);
                if entry.seq <= at {
                    assert!(all.is_empty(), "an old entry changed {all:?}");
                } else if sender.seed == BOB.seed {
                    assert!(
                        mls_changed.is_empty(),
                        "Bob's own entry changed MLS state: {mls_changed:?}"
                    );
                    let settles = post_id == own_post_id;
                    let broken = state == "broken" && stated == content_type::COMMIT;
                    // A commit by another install of this device: rejoined later
                    // (engine::resync), nothing else changes now.
                    let resync = outcome.resync
                        && stated == content_type::COMMIT
                        && all.iter().all(|t| t == "resyncs");
                    assert!(
                        all.is_empty()
                            || broken
                            || resync
                            || (settles
                                && all.iter().all(|t| t == "outbox" || t == "messages")),
                        "Bob's own entry (post id {}) changed {all:?}",
                        if settles { "his" } else { "unknown" }
                    );
                    if is_fresh {
                        fresh.insert(sha(message));
                    }
                } else if !is_fresh {
                    let broken = state == "broken" && stated == content_type::COMMIT;
                    assert!(
                        all.is_empty() || (broken && mls_changed.is_empty()),
                        "a {} entry from {} that is not a fresh real message changed {all:?} (state {state})",
                        stated,
                        sender.name
                    );
                } else if all.is_empty() {
                    // A fresh message that changed nothing stays fresh.
                    fresh.insert(sha(message));
                }
                if outcome.broken {
                    assert_eq!(state, "broken", "a broken outcome leaves the state {state}");
                }
                if outcome.removed {
                    assert!(
                        state == "removed" || state == "left",
                        "a removal leaves the state {state}"
                    );
                }
                report.received.extend(
                    before
                        .get("messages")
                        .map(|old| {
                            after["messages"]
                                .iter()
                                .filter(|r| !old.contains(r) && r.contains("state=\"received\""))
                                .cloned()
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default(),
                );
                report.resync |= outcome.resync;
                if outcome.broken || outcome.removed || outcome.resync {
                    break;
                }
            }
            report.state = conversation_state(tx.conn(), &conv).unwrap_or_default();
            report.epoch = tx
                .conn()
                .query_row("SELECT epoch FROM conversations WHERE id = ?1", [&conv], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|e| e as u64)
                .unwrap_or_default();
            report.proposals = tx
                .conn()
                .query_row(
                    "SELECT COUNT(*) FROM outbox WHERE conversation = ?1 AND op = 'commit_pending'",
                    [&conv],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap_or_default() as usize;
            report.own_sent = tx
                .conn()
                .query_row(
                    "SELECT COUNT(*) FROM outbox WHERE post_id = ?1",
                    [&own_post_id[..]],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap_or_default()
                == 0;
            report
        }
    })
}

/// One `mls_welcome` input: a selector byte, a 16-byte group id (the envelope's) and the
/// TLS-serialized Welcome message (the rest).
///
/// Selector bits 0-1: the mailbox entry's sender (Alice, Carol, Bob himself, Eve); bit 2:
/// the rest is the whole mailbox payload (wire-encoded) instead of a Welcome to wrap;
/// bit 3: the envelope's join seq is 0 (else 2).
pub fn welcome(data: &[u8]) {
    let _ = welcome_report(data);
}

/// [`welcome`], saying what the input did.
pub fn welcome_report(data: &[u8]) -> Report {
    let Some((&sel, rest)) = data.split_first() else {
        return Report::default();
    };
    let sender = SENDERS[usize::from(sel & 3)];
    let payload = if sel & 4 != 0 {
        rest.to_vec()
    } else {
        let (group_id, welcome) = rest.split_at(rest.len().min(16));
        wire::encode(&MailboxPayload::Welcome(WelcomeEnvelope {
            relay_url: RELAY.into(),
            group_id: group_id.to_vec(),
            join_seq: if sel & 8 != 0 { 0 } else { 2 },
            welcome: welcome.to_vec(),
        }))
    };
    let entry = MailboxEntry {
        seq: 7,
        sender: sender.public_key(),
        sender_address: sender.address(),
        post_id: [9; 16],
        payload,
        stored_at: 0,
    };
    let h = harness();
    let welcomes = h.welcomes.clone();
    h.run(move |tx| {
        let before = snapshot(tx.conn());
        let joined =
            welcome::join(tx, &BOB.address(), &BOB.public_key(), &entry).unwrap_or_else(|e| {
                panic!("a Welcome failed (the mailbox follower would retry it forever): {e}")
            });
        let after = snapshot(tx.conn());
        let mut report = Report::default();
        match &joined {
            None => {
                let all = changed(&before, &after, |_| true);
                assert!(
                    all.is_empty(),
                    "a Welcome that was not joined changed {all:?}"
                );
            }
            Some(id) => {
                let gid = hex::decode(id).expect("a hex conversation id");
                let Some((_, members)) = welcomes.iter().find(|(g, _)| *g == gid) else {
                    panic!("joined {id}, not a group of the fixture's Welcomes");
                };
                let mut found: Vec<String> = tx
                    .conn()
                    .prepare("SELECT address FROM members WHERE conversation = ?1")
                    .and_then(|mut st| {
                        st.query_map([id], |r| r.get(0))?
                            .collect::<Result<Vec<String>, _>>()
                    })
                    .expect("read the members");
                found.sort();
                let mut want = members.clone();
                want.sort();
                assert_eq!(found, want, "the joined group's members");
                assert!(
                    found.contains(&sender.address()),
                    "joined a Welcome posted by {}, who is not in the group",
                    sender.name
                );
                report.state = conversation_state(tx.conn(), id).expect("the joined conversation");
            }
        }
        report.joined = joined;
        report
    })
}

// ---------------------------------------------------------------------------------------
// Building the fixture and the seeds (by hand, when the daemon's schema or openmls's
// storage changes in a way the kept fixture cannot follow).

/// A member's database during the build.
struct Member {
    who: Who,
    store: Store,
}

impl Member {
    fn open(rt: &Runtime, who: Who, file: Option<&Path>) -> Member {
        let events = tokio::sync::broadcast::channel(16).0;
        let store = match file {
            Some(path) => Store::open(
                path,
                &DbKey::from_bytes(&DB_KEY).expect("a key"),
                events,
                1000,
            ),
            None => Store::open_ephemeral(events, 1000),
        }
        .expect("open a member's database");
        let (address, device, public) = (who.address(), who.device(), who.public_key());
        call(rt, &store, move |db| {
            db.write(|tx| {
                tx.conn().execute(
                    "INSERT INTO account (id, address, device_id, relay, key_store, public_key, created_at)
                     VALUES (1, ?1, ?2, ?3, 'file', ?4, ?5)",
                    params![address, device, RELAY, &public[..], crate::clock::now_rfc3339()],
                )?;
                Ok(())
            })
        });
        Member { who, store }
    }

    fn write<T: Send + 'static>(
        &self,
        rt: &Runtime,
        f: impl FnOnce(&mut Tx<'_>, Who) -> Result<T, StoreError> + Send + 'static,
    ) -> T {
        let who = self.who;
        call(rt, &self.store, move |db| db.write(|tx| f(tx, who)))
    }

    fn trial<T: Send + 'static>(
        &self,
        rt: &Runtime,
        f: impl FnOnce(&mut Tx<'_>, Who) -> T + Send + 'static,
    ) -> T {
        let who = self.who;
        call(rt, &self.store, move |db| {
            Ok(in_rolled_back_tx(db, |tx| f(tx, who))
                .unwrap_or_else(|p| std::panic::resume_unwind(p)))
        })
    }

    fn key_packages(&self, rt: &Runtime, suite: Ciphersuite, n: usize) -> Vec<Claimed> {
        let batch = self.write(rt, move |tx, who| {
            keypackages::generate(
                tx.conn(),
                &who.key(),
                &who.address(),
                &who.device(),
                suite,
                n,
                false,
            )
        });
        let who = self.who;
        batch
            .packages
            .into_iter()
            .map(|key_package| Claimed {
                address: who.address(),
                device_id: who.device(),
                identity_key: who.public_key(),
                relay: RELAY.into(),
                key_package,
            })
            .collect()
    }
}

/// A prepared post: its post id and bytes (and a Welcome for adds).
#[derive(Debug, Clone)]
struct Prepared {
    post_id: [u8; 16],
    message: Vec<u8>,
    welcome: Option<Vec<u8>>,
}

fn prepared(tx: &Tx<'_>, row: i64) -> Result<Prepared, StoreError> {
    Ok(tx.conn().query_row(
        "SELECT post_id, mls_message, welcome FROM outbox WHERE id = ?1",
        [row],
        |r| {
            Ok(Prepared {
                post_id: r.get::<_, Vec<u8>>(0)?.try_into().unwrap_or_default(),
                message: r.get(1)?,
                welcome: r.get(2)?,
            })
        },
    )?)
}

fn outbox_row(
    tx: &Tx<'_>,
    conv: &str,
    op: &str,
    payload: &str,
    message_id: Option<&str>,
) -> Result<outbound::OutboxRow, StoreError> {
    tx.conn().execute(
        "INSERT INTO outbox (conversation, op, payload, message_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![conv, op, payload, message_id, crate::clock::now_rfc3339()],
    )?;
    let id = tx.conn().last_insert_rowid();
    match outbound::head(tx.conn(), conv)? {
        Some(head) if head.id == id => Ok(head),
        other => Err(StoreError::Decode(format!(
            "the new {op} row is not the outbox head: {other:?}"
        ))),
    }
}

/// Builds a group as `conversation.create` does, alone in it.
fn build_group(
    tx: &mut Tx<'_>,
    who: Who,
    group_id: [u8; 16],
    suite: Ciphersuite,
    name: Option<&str>,
) -> Result<MlsGroup, StoreError> {
    let key = who.key();
    let provider = Provider::new(tx.conn());
    let cred = mls::credential(&who.address(), &who.device(), &key.public_key());
    mls::new_group(&provider, &key, cred, &group_id, suite, name).map_err(StoreError::Decode)
}

/// Creates a group as `conversation.create` does and prepares its first commit.
fn create_group(
    tx: &mut Tx<'_>,
    who: Who,
    group_id: [u8; 16],
    suite: Ciphersuite,
    name: Option<&str>,
    claims: &[Claimed],
) -> Result<(String, Prepared), StoreError> {
    let key = who.key();
    let group = build_group(tx, who, group_id, suite, name)?;
    let conv = hex::encode(group_id);
    let direct = name.is_none() && claims.len() == 1;
    let peer = direct.then(|| claims[0].address.as_str());
    crate::model::insert_pending_conversation(
        tx.conn(),
        &conv,
        name,
        RELAY,
        u16::from(suite),
        peer,
    )?;
    crate::model::set_members(tx.conn(), &conv, &mls::members(&group))?;
    drop(group);
    let payload = serde_json::to_string(&MembersPayload {
        members: claims.iter().map(|c| c.address.clone()).collect(),
    })
    .unwrap_or_default();
    let row = outbox_row(tx, &conv, "create", &payload, None)?;
    let made = outbound::prepare_add(tx, &conv, &row, &key, claims)
        .map_err(|e| StoreError::Decode(e.to_string()))?;
    if !made {
        return Err(StoreError::Decode("nothing to add".into()));
    }
    Ok((conv, prepared(tx, row.id)?))
}

fn prepare_change(
    tx: &mut Tx<'_>,
    who: Who,
    conv: &str,
    op: &str,
    payload: &str,
) -> Result<Prepared, StoreError> {
    let row = outbox_row(tx, conv, op, payload, None)?;
    let made = outbound::prepare_change(tx, conv, &row, &who.key())
        .map_err(|e| StoreError::Decode(e.to_string()))?;
    if !made {
        return Err(StoreError::Decode(format!("nothing to {op}")));
    }
    prepared(tx, row.id)
}

fn prepare_message(
    tx: &mut Tx<'_>,
    who: Who,
    conv: &str,
    text: &str,
) -> Result<Prepared, StoreError> {
    let id = hex::encode(sha(text.as_bytes()).get(..16).unwrap_or_default());
    tx.conn().execute(
        "INSERT INTO messages (id, conversation, sender, kind, text, reply_to, sent_at, state)
         VALUES (?1, ?2, ?3, 'text', ?4, NULL, ?5, 'queued')",
        params![id, conv, who.address(), text, crate::clock::now_rfc3339()],
    )?;
    let payload = serde_json::to_string(&MessagePayload {
        id: id.clone(),
        text: text.to_owned(),
        reply_to: None,
        sent_at: 1_700_000_000,
    })
    .unwrap_or_default();
    let row = outbox_row(tx, conv, "message", &payload, Some(&id))?;
    outbound::prepare_message(tx, conv, &row, &who.key())
        .map_err(|e| StoreError::Decode(e.to_string()))?;
    prepared(tx, row.id)
}

/// The relay's log of one group, as far as the build needs it.
#[derive(Default)]
struct Log {
    entries: Vec<GroupEntry>,
}

impl Log {
    fn post(&mut self, who: Who, content_type: u8, p: &Prepared) -> GroupEntry {
        let e = GroupEntry {
            seq: self.entries.len() as u64 + 1,
            epoch: 0,
            content_type,
            sender: who.public_key(),
            post_id: p.post_id,
            message: p.message.clone(),
        };
        self.entries.push(e.clone());
        e
    }
}

fn process(rt: &Runtime, m: &Member, conv: &str, entry: &GroupEntry) {
    let (conv, entry) = (conv.to_owned(), entry.clone());
    let outcome = m.write(rt, move |tx, who| {
        inbound::process(tx, &conv, &who.address(), &who.public_key(), &entry)
    });
    assert!(
        !outcome.broken && !outcome.removed && !outcome.stale_group,
        "{} processing the build's entry: {outcome:?}",
        m.who.name
    );
}

fn welcome_entry(from: Who, group_id: &[u8], join_seq: u64, welcome: &[u8]) -> MailboxEntry {
    MailboxEntry {
        seq: 1,
        sender: from.public_key(),
        sender_address: from.address(),
        post_id: [1; 16],
        payload: wire::encode(&MailboxPayload::Welcome(WelcomeEnvelope {
            relay_url: RELAY.into(),
            group_id: group_id.to_vec(),
            join_seq,
            welcome: welcome.to_vec(),
        })),
        stored_at: 0,
    }
}

fn join(rt: &Runtime, m: &Member, entry: &MailboxEntry) {
    let entry = entry.clone();
    let joined = m.write(rt, move |tx, who| {
        welcome::join(tx, &who.address(), &who.public_key(), &entry)
    });
    assert!(joined.is_some(), "{} joins the build's group", m.who.name);
}

/// Writes `fuzz/fixtures/mls/` (Bob's database and the manifest) and the seeds of
/// `fuzz/corpus/mls_group_entry/` and `fuzz/corpus/mls_welcome/`.
pub fn write_fixture(fuzz: &Path) {
    let rt = runtime();
    let dir = temp_dir();
    let alice = Member::open(&rt, ALICE, None);
    let bob = Member::open(&rt, BOB, Some(&dir.join("bob.db")));
    let carol = Member::open(&rt, CAROL, None);
    let dave = Member::open(&rt, DAVE, None);
    let eve = Member::open(&rt, EVE, None);
    let suite = mls::DEFAULT_CIPHERSUITE;
    let bob_kps = bob.key_packages(&rt, suite, 3);
    let bob_pq = bob.key_packages(&rt, mls::PQ_CIPHERSUITE, 1);
    let carol_kps = carol.key_packages(&rt, suite, 2);
    let dave_kps = dave.key_packages(&rt, suite, 2);
    let conv = hex::encode(GROUP);
    let mut log = Log::default();

    // Epoch 1: Alice creates the group with Bob and Carol.
    let claims = vec![bob_kps[0].clone(), carol_kps[0].clone()];
    let (_, created) = alice.write(&rt, move |tx, who| {
        create_group(tx, who, GROUP, suite, Some("fuzz"), &claims)
    });
    let e = log.post(ALICE, content_type::COMMIT, &created);
    process(&rt, &alice, &conv, &e);
    let c = conv.clone();
    alice.write(&rt, move |tx, _| {
        tx.conn()
            .execute("DELETE FROM outbox WHERE conversation = ?1", [&c])?;
        Ok(())
    });
    let w = welcome_entry(
        ALICE,
        &GROUP,
        e.seq + 1,
        created.welcome.as_deref().expect("a Welcome"),
    );
    join(&rt, &bob, &w);
    join(&rt, &carol, &w);
    let welcome_known = created.welcome.clone().expect("a Welcome");

    // Carol's message at epoch 1, never posted (a late one for a malicious relay).
    let c = conv.clone();
    let carol_late = carol.trial(&rt, move |tx, who| {
        prepare_message(tx, who, &c, "carol, late from epoch 1").expect("prepare")
    });
    let all = [&alice, &bob, &carol];
    let deliver = |log: &mut Log, who: Who, ct: u8, p: &Prepared| {
        let e = log.post(who, ct, p);
        for m in all {
            process(&rt, m, &conv, &e);
        }
    };
    let c = conv.clone();
    let m1 = alice.write(&rt, move |tx, who| {
        prepare_message(tx, who, &c, "alice at epoch 1")
    });
    deliver(&mut log, ALICE, content_type::APPLICATION, &m1);
    // Epoch 2: Carol updates her keys.
    let c = conv.clone();
    let rotate = carol.write(&rt, move |tx, who| {
        prepare_change(tx, who, &c, "rotate_keys", "{}")
    });
    deliver(&mut log, CAROL, content_type::COMMIT, &rotate);
    let c = conv.clone();
    let m2 = alice.write(&rt, move |tx, who| {
        prepare_message(tx, who, &c, "alice at epoch 2")
    });
    deliver(&mut log, ALICE, content_type::APPLICATION, &m2);
    // Bob's own message, prepared and in flight.
    let c = conv.clone();
    let bob_own = bob.write(&rt, move |tx, who| {
        prepare_message(tx, who, &c, "bob's message in flight")
    });

    // Seeds: real input at this state, each made in a transaction that is rolled back.
    let mut fresh: Vec<Vec<u8>> = Vec::new();
    let mut entries: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut seed = |name: &'static str, recs: &[(u8, &[u8])], is_fresh: bool| {
        if is_fresh {
            fresh.extend(recs.iter().map(|(_, b)| b.to_vec()));
        }
        entries.push((name, encode_records(recs)));
    };
    let c = conv.clone();
    let app = alice.trial(&rt, move |tx, who| {
        prepare_message(tx, who, &c, "hello from alice").expect("prepare")
    });
    seed(
        "app-alice",
        &[(SEL_ALICE | SEL_APPLICATION, &app.message)],
        true,
    );
    seed(
        "app-carol-late-epoch1",
        &[(SEL_CAROL | SEL_APPLICATION, &carol_late.message)],
        true,
    );
    seed(
        "app-alice-replayed",
        &[(SEL_ALICE | SEL_APPLICATION, &m2.message)],
        false,
    );
    seed(
        "app-alice-twice",
        &[
            (SEL_ALICE | SEL_APPLICATION, &app.message),
            (SEL_ALICE | SEL_APPLICATION, &app.message),
        ],
        false,
    );
    let change = |op: &'static str, payload: String| {
        let c = conv.clone();
        alice.trial(&rt, move |tx, who| {
            prepare_change(tx, who, &c, op, &payload).expect("prepare a change")
        })
    };
    let update = change("rotate_keys", "{}".into());
    seed(
        "commit-alice-update",
        &[(SEL_ALICE | SEL_COMMIT, &update.message)],
        true,
    );
    let rename = change(
        "rename",
        serde_json::to_string(&RenamePayload {
            name: "renamed".into(),
        })
        .unwrap_or_default(),
    );
    seed(
        "commit-alice-rename",
        &[(SEL_ALICE | SEL_COMMIT, &rename.message)],
        true,
    );
    let remove = |who: Who| {
        change(
            "remove",
            serde_json::to_string(&MembersPayload {
                members: vec![who.address()],
            })
            .unwrap_or_default(),
        )
    };
    let rm_carol = remove(CAROL);
    seed(
        "commit-alice-remove-carol",
        &[(SEL_ALICE | SEL_COMMIT, &rm_carol.message)],
        true,
    );
    let rm_bob = remove(BOB);
    seed(
        "commit-alice-remove-bob",
        &[(SEL_ALICE | SEL_COMMIT, &rm_bob.message)],
        true,
    );
    let (c, dave_kp) = (conv.clone(), dave_kps[0].clone());
    let add_dave = alice.trial(&rt, move |tx, who| {
        let payload = serde_json::to_string(&MembersPayload {
            members: vec![DAVE.address()],
        })
        .unwrap_or_default();
        let row = outbox_row(tx, &c, "add", &payload, None).expect("an add row");
        outbound::prepare_add(tx, &c, &row, &who.key(), &[dave_kp]).expect("prepare the add");
        prepared(tx, row.id).expect("the prepared add")
    });
    seed(
        "commit-alice-add-dave",
        &[(SEL_ALICE | SEL_COMMIT, &add_dave.message)],
        true,
    );
    let c = conv.clone();
    let leave = carol.trial(&rt, move |tx, who| {
        prepare_change(tx, who, &c, "leave", "{}").expect("prepare the leave")
    });
    seed(
        "proposal-carol-leave",
        &[(SEL_CAROL | SEL_PROPOSAL, &leave.message)],
        true,
    );
    // Carol's Remove proposal, then Alice's commit of it.
    let (c, leave_entry) = (
        conv.clone(),
        GroupEntry {
            seq: log.entries.len() as u64 + 1,
            epoch: 0,
            content_type: content_type::PROPOSAL,
            sender: CAROL.public_key(),
            post_id: leave.post_id,
            message: leave.message.clone(),
        },
    );
    let commit_leave = alice.trial(&rt, move |tx, who| {
        inbound::process(tx, &c, &who.address(), &who.public_key(), &leave_entry)
            .expect("process the proposal");
        let row = outbound::head(tx.conn(), &c)
            .expect("read the outbox")
            .expect("a commit_pending row");
        assert_eq!(row.op, "commit_pending");
        outbound::prepare_change(tx, &c, &row, &who.key()).expect("commit the proposal");
        prepared(tx, row.id).expect("the prepared commit")
    });
    seed(
        "proposal-then-commit",
        &[
            (SEL_CAROL | SEL_PROPOSAL, &leave.message),
            (SEL_ALICE | SEL_COMMIT, &commit_leave.message),
        ],
        true,
    );
    // Alice's update, then her message in the new epoch.
    let (c, n) = (conv.clone(), log.entries.len() as u64);
    let (update2, after_update) = alice.trial(&rt, move |tx, who| {
        let update = prepare_change(tx, who, &c, "rotate_keys", "{}").expect("prepare");
        let e = GroupEntry {
            seq: n + 1,
            epoch: 0,
            content_type: content_type::COMMIT,
            sender: who.public_key(),
            post_id: update.post_id,
            message: update.message.clone(),
        };
        inbound::process(tx, &c, &who.address(), &who.public_key(), &e).expect("merge");
        let m = prepare_message(tx, who, &c, "alice after her update").expect("prepare");
        (update, m)
    });
    seed(
        "commit-then-app",
        &[
            (SEL_ALICE | SEL_COMMIT, &update2.message),
            (SEL_ALICE | SEL_APPLICATION, &after_update.message),
        ],
        true,
    );
    seed(
        "own-entry-sent",
        &[(SEL_BOB | SEL_APPLICATION | SEL_OWN_POST, &bob_own.message)],
        false,
    );
    seed(
        "own-commit-unknown-post",
        &[(SEL_BOB | SEL_COMMIT, &update.message)],
        false,
    );
    // Eve, outside, in a group of her own under the same group id.
    let (eve_app, eve_commit) = eve.trial(&rt, move |tx, who| {
        let mut group = build_group(tx, who, GROUP, suite, Some("fuzz")).expect("Eve's group");
        let key = who.key();
        let provider = Provider::new(tx.conn());
        use openmls::prelude::tls_codec::Serialize as _;
        let app = group
            .create_message(&provider, &key, b"eve was here")
            .expect("Eve's message")
            .tls_serialize_detached()
            .expect("encode");
        let commit = group
            .self_update(&provider, &key, LeafNodeParameters::default())
            .expect("Eve's update")
            .into_commit()
            .tls_serialize_detached()
            .expect("encode");
        (app, commit)
    });
    seed(
        "outsider-app",
        &[(SEL_EVE | SEL_APPLICATION, &eve_app)],
        false,
    );
    seed(
        "outsider-commit",
        &[(SEL_EVE | SEL_COMMIT, &eve_commit)],
        false,
    );
    seed(
        "member-garbage",
        &[(SEL_CAROL | SEL_APPLICATION, b"\x00\x01garbage")],
        false,
    );

    // Welcomes to Bob at this state.
    let mut welcomes: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut joinable: Vec<(Vec<u8>, Vec<String>)> = Vec::new();
    let mut make_welcome = |name: &'static str,
                            sender: u8,
                            group: [u8; 16],
                            suite: Ciphersuite,
                            gname: Option<&'static str>,
                            claims: Vec<Claimed>,
                            members: Option<Vec<Who>>| {
        let made = alice.trial(&rt, move |tx, who| {
            create_group(tx, who, group, suite, gname, &claims)
                .expect("create a group")
                .1
        });
        let mut input = vec![sender];
        input.extend_from_slice(&group);
        input.extend_from_slice(made.welcome.as_deref().expect("a Welcome"));
        welcomes.push((name, input));
        if let Some(m) = members {
            joinable.push((group.to_vec(), m.iter().map(|w| w.address()).collect()));
        }
    };
    make_welcome(
        "welcome-group",
        SEL_ALICE,
        *b"fuzz-welcome-grp",
        suite,
        Some("a group"),
        vec![bob_kps[1].clone(), carol_kps[1].clone()],
        Some(vec![ALICE, BOB, CAROL]),
    );
    make_welcome(
        "welcome-direct",
        SEL_ALICE,
        *b"fuzz-welcome-dir",
        suite,
        None,
        vec![bob_kps[2].clone()],
        Some(vec![ALICE, BOB]),
    );
    make_welcome(
        "welcome-pq",
        SEL_ALICE,
        *b"fuzz-welcome-pq-",
        mls::PQ_CIPHERSUITE,
        Some("post-quantum"),
        bob_pq,
        Some(vec![ALICE, BOB]),
    );
    make_welcome(
        "welcome-not-for-bob",
        SEL_ALICE,
        *b"fuzz-welcome-dav",
        suite,
        None,
        vec![dave_kps[1].clone()],
        None,
    );
    let mut known = vec![SEL_ALICE];
    known.extend_from_slice(&GROUP);
    known.extend_from_slice(&welcome_known);
    welcomes.push(("welcome-known-group", known));
    let mut from_eve = welcomes[0].1.clone();
    from_eve[0] = SEL_EVE;
    welcomes.push(("welcome-group-from-outsider", from_eve));

    // Bob's database, as a plain SQLite file.
    let fixture = fuzz.join("fixtures/mls");
    std::fs::create_dir_all(&fixture).expect("create fuzz/fixtures/mls");
    let out = fixture.join("bob.db");
    let _ = std::fs::remove_file(&out);
    let target = out.to_string_lossy().into_owned();
    call(&rt, &bob.store, move |db| {
        db.checkpoint()?;
        db.conn()
            .execute("ATTACH DATABASE ?1 AS plaintext KEY ''", [&target])?;
        db.conn()
            .query_row("SELECT sqlcipher_export('plaintext')", [], |_| Ok(()))?;
        let version: i64 = db
            .conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        db.conn()
            .execute_batch(&format!("PRAGMA plaintext.user_version = {version}"))?;
        db.conn().execute_batch("DETACH DATABASE plaintext")?;
        Ok(())
    });
    let mut manifest = String::from(
        "# The MLS fuzz fixture (daemon/src/engine/fuzzing.rs writes it): real messages Bob has\n# not processed (SHA-256), and the groups of the Welcomes he can join with their members.\n",
    );
    for m in &fresh {
        manifest.push_str(&format!("fresh {}\n", hex::encode(sha(m))));
    }
    for (g, members) in &joinable {
        manifest.push_str(&format!(
            "welcome {} {}\n",
            hex::encode(g),
            members.join(" ")
        ));
    }
    std::fs::write(fixture.join("manifest.txt"), manifest).expect("write the manifest");
    for (target, seeds) in [("mls_group_entry", entries), ("mls_welcome", welcomes)] {
        let d = fuzz.join("corpus").join(target);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create a corpus directory");
        for (name, bytes) in seeds {
            std::fs::write(d.join(name), bytes).expect("write a seed");
        }
    }
    drop((alice, bob, carol, dave, eve));
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests {
    use super::*;
    use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};

    /// Alice's group with Bob (epoch 1), as Bob's install holds it.
    fn alice_and_bob(rt: &Runtime) -> (Member, Member, String) {
        let alice = Member::open(rt, ALICE, None);
        let bob = Member::open(rt, BOB, None);
        let claims = bob.key_packages(rt, mls::DEFAULT_CIPHERSUITE, 1);
        let (conv, created) = alice.write(rt, move |tx, who| {
            create_group(tx, who, GROUP, mls::DEFAULT_CIPHERSUITE, Some("g"), &claims)
        });
        let e = Log::default().post(ALICE, content_type::COMMIT, &created);
        process(rt, &alice, &conv, &e);
        let w = welcome_entry(
            ALICE,
            &GROUP,
            e.seq + 1,
            created.welcome.as_deref().expect("a Welcome"),
        );
        join(rt, &bob, &w);
        (alice, bob, conv)
    }

    /// What a malicious relay can make: a group with `group_id` of its own (Eve's key),
    /// whose only leaf claims `address`/`device`, `epochs` commits on, exported as a
    /// GroupInfo with the ratchet tree and an external public key.
    fn forged(
        rt: &Runtime,
        group_id: [u8; 16],
        address: &str,
        device: &str,
        epochs: u32,
    ) -> Vec<u8> {
        let eve = Member::open(rt, EVE, None);
        let (address, device) = (address.to_owned(), device.to_owned());
        eve.write(rt, move |tx, who| {
            let key = who.key();
            let provider = Provider::new(tx.conn());
            let cred = mls::credential(&address, &device, &key.public_key());
            let mut group = MlsGroup::builder()
                .with_group_id(GroupId::from_slice(&group_id))
                .ciphersuite(mls::DEFAULT_CIPHERSUITE)
                .use_ratchet_tree_extension(true)
                .with_capabilities(mls::capabilities())
                .build(&provider, &key, cred)
                .map_err(|e| StoreError::Decode(e.to_string()))?;
            for _ in 0..epochs {
                group
                    .self_update(&provider, &key, LeafNodeParameters::default())
                    .map_err(|e| StoreError::Decode(e.to_string()))?;
                group
                    .merge_pending_commit(&provider)
                    .map_err(|e| StoreError::Decode(e.to_string()))?;
            }
            let info = group
                .export_group_info(provider.crypto(), &key, true)
                .map_err(|e| StoreError::Decode(e.to_string()))?;
            info.tls_serialize_detached()
                .map_err(|e| StoreError::Decode(e.to_string()))
        })
    }

    /// Bob's resync build from `info` (committed, as the actor does).
    fn bob_builds(
        rt: &Runtime,
        bob: &Member,
        conv: &str,
        info: Vec<u8>,
        new_on: Option<&'static str>,
    ) -> Result<(), String> {
        let conv = conv.to_owned();
        bob.write(rt, move |tx, who| {
            let (address, device_id, key) = (who.address(), who.device(), who.key());
            let me = super::super::resync::Me {
                address: &address,
                device_id: &device_id,
                key: &key,
            };
            super::super::resync::build(tx, &conv, &me, &info, 9, new_on)
        })
    }

    #[test]
    fn a_welcome_whose_group_has_a_ghost_of_this_account_is_dropped() {
        let rt = runtime();
        let bob = Member::open(&rt, BOB, None);
        let claim = bob.key_packages(&rt, mls::DEFAULT_CIPHERSUITE, 1).remove(0);
        // Eve's group: her leaf claims Bob's address (with her key); she adds Bob's real
        // device, so the Welcome's tree carries Bob's key too.
        let eve = Member::open(&rt, EVE, None);
        let welcome = eve.write(&rt, move |tx, who| {
            let key = who.key();
            let provider = Provider::new(tx.conn());
            let cred = mls::credential(&BOB.address(), "ghost", &key.public_key());
            let mut group = MlsGroup::builder()
                .with_group_id(GroupId::from_slice(&GROUP))
                .ciphersuite(mls::DEFAULT_CIPHERSUITE)
                .use_ratchet_tree_extension(true)
                .with_capabilities(mls::capabilities())
                .build(&provider, &key, cred)
                .map_err(|e| StoreError::Decode(e.to_string()))?;
            let kp = KeyPackageIn::tls_deserialize_exact(&claim.key_package)
                .map_err(|e| StoreError::Decode(e.to_string()))?
                .validate(provider.crypto(), ProtocolVersion::Mls10)
                .map_err(|e| StoreError::Decode(e.to_string()))?;
            let (_, welcome, _) = group
                .add_members(&provider, &key, &[kp])
                .map_err(|e| StoreError::Decode(e.to_string()))?;
            welcome
                .tls_serialize_detached()
                .map_err(|e| StoreError::Decode(e.to_string()))
        });
        let entry = welcome_entry(EVE, &GROUP, 2, &welcome);
        let before = call(&rt, &bob.store, |db| Ok(snapshot(db.conn())));
        let joined = bob.write(&rt, move |tx, who| {
            welcome::join(tx, &who.address(), &who.public_key(), &entry)
        });
        assert_eq!(joined, None, "the ghost's group is not joined");
        let after = call(&rt, &bob.store, |db| Ok(snapshot(db.conn())));
        assert_eq!(changed(&before, &after, |_| true), Vec::<String>::new());
    }

    #[test]
    fn a_group_info_the_relay_made_up_is_refused_and_changes_nothing() {
        let rt = runtime();
        let (alice, bob, conv) = alice_and_bob(&rt);
        let before = call(&rt, &bob.store, |db| Ok(snapshot(db.conn())));
        let cases = [
            // A ghost of Bob himself (his address, the relay's key): would hide from the
            // contact-key check.
            (
                forged(&rt, GROUP, &BOB.address(), &BOB.device(), 2),
                "this account's address and another key",
            ),
            // Alice's address with a key that is not the one Bob pinned.
            (
                forged(&rt, GROUP, &ALICE.address(), &ALICE.device(), 2),
                "not signed by a member key this install trusts",
            ),
            // Someone Bob never met.
            (
                forged(&rt, GROUP, &EVE.address(), &EVE.device(), 2),
                "not signed by a member key this install trusts",
            ),
            // Older than Bob's state (epoch 1).
            (
                forged(&rt, GROUP, &ALICE.address(), &ALICE.device(), 0),
                "older (epoch 0) than this install's state (epoch 1)",
            ),
        ];
        for (info, why) in cases {
            let refused = bob_builds(&rt, &bob, &conv, info, None)
                .expect_err("a made-up GroupInfo is refused");
            assert!(refused.contains(why), "{refused} (expected: {why})");
            let after = call(&rt, &bob.store, |db| Ok(snapshot(db.conn())));
            assert_eq!(
                changed(&before, &after, |_| true),
                Vec::<String>::new(),
                "a refused GroupInfo changes nothing ({why})"
            );
        }
        // The same after a restore (no state of the group): a group unknown to this install
        // signed by someone it never met is not joined.
        let other = *b"sotto-other-grp!";
        let refused = bob_builds(
            &rt,
            &bob,
            &hex::encode(other),
            forged(&rt, other, &EVE.address(), &EVE.device(), 1),
            Some(RELAY),
        )
        .expect_err("a group signed by a stranger is not joined");
        assert!(refused.contains("not signed by a member key"), "{refused}");
        let after = call(&rt, &bob.store, |db| Ok(snapshot(db.conn())));
        assert_eq!(changed(&before, &after, |_| true), Vec::<String>::new());

        // The honest GroupInfo (Alice's, at her epoch) is used (in a rolled-back trial).
        let c = conv.clone();
        let honest = alice.write(&rt, move |tx, who| {
            let group = outbound::take_group(tx, &c)?.expect("alice's group");
            let provider = Provider::new(tx.conn());
            let info = group
                .export_group_info(provider.crypto(), &who.key(), true)
                .map_err(|e| StoreError::Decode(e.to_string()))?
                .tls_serialize_detached()
                .map_err(|e| StoreError::Decode(e.to_string()))?;
            outbound::keep_group(tx, &c, group);
            Ok(info)
        });
        let c = conv.clone();
        let built = bob.trial(&rt, move |tx, who| {
            let (address, device_id, key) = (who.address(), who.device(), who.key());
            let me = super::super::resync::Me {
                address: &address,
                device_id: &device_id,
                key: &key,
            };
            super::super::resync::build(tx, &c, &me, &honest, 9, None)
        });
        assert!(
            matches!(built, Ok(Ok(()))),
            "the honest GroupInfo is used: {built:?}"
        );
    }

    /// Writes the fixture and seeds (by hand: `cargo test -p sottod --lib
    /// write_mls_fuzz_fixture -- --ignored`).
    #[test]
    #[ignore]
    fn write_mls_fuzz_fixture() {
        write_fixture(&fuzz_dir());
    }

    fn kept(target: &str) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for dir in ["corpus", "regressions"] {
            let d = fuzz_dir().join(dir).join(target);
            let Ok(list) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in list.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || name == "README" {
                    continue;
                }
                out.push((
                    format!("{dir}/{target}/{name}"),
                    std::fs::read(e.path()).expect("read a kept input"),
                ));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn every_kept_mls_fuzz_input_replays_cleanly() {
        for (target, body) in [
            ("mls_group_entry", group_entries as fn(&[u8])),
            ("mls_welcome", welcome),
        ] {
            let inputs = kept(target);
            assert!(inputs.len() >= 5, "{target} has kept inputs");
            for (name, bytes) in inputs {
                eprintln!("replaying {name}");
                body(&bytes);
            }
        }
    }

    /// One random mutation of `input` (libFuzzer's simplest moves): flip a bit, set a
    /// byte, insert or delete a run, truncate, or splice in part of another input.
    fn mutate(rng: &mut rand::rngs::StdRng, input: &mut Vec<u8>, other: &[u8]) {
        use rand::Rng as _;
        let len = input.len();
        match rng.gen_range(0..6) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] = rng.r#gen();
            }
            2 => {
                let i = rng.gen_range(0..=len);
                let n = rng.gen_range(1..8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.r#gen()).collect();
                input.splice(i..i, bytes);
            }
            3 if len > 1 => {
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(16));
                input.drain(i..i + n);
            }
            4 if len > 1 => input.truncate(rng.gen_range(1..len)),
            _ if !other.is_empty() => {
                let from = rng.gen_range(0..other.len());
                let n = rng.gen_range(1..=(other.len() - from).min(64));
                let at = rng.gen_range(0..=len);
                input.splice(at..at, other[from..from + n].iter().copied());
            }
            _ => input.push(rng.r#gen()),
        }
    }

    /// The stable counterpart of the libFuzzer targets, in every `cargo test`: seeded
    /// random mutations of the kept inputs through the same bodies (`SOTTO_FUZZ_SEED`
    /// replays a run, `SOTTO_FUZZ_MUTATIONS` sets how many per target; the libFuzzer
    /// targets in fuzz/ are the coverage-guided long run).
    #[test]
    fn seeded_mutations_of_the_mls_seeds_keep_every_invariant() {
        use rand::{Rng as _, SeedableRng as _};
        let seed: u64 = std::env::var("SOTTO_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        let n: usize = std::env::var("SOTTO_FUZZ_MUTATIONS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(150);
        eprintln!("SOTTO_FUZZ_SEED={seed}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for (target, body) in [
            ("mls_group_entry", group_entries as fn(&[u8])),
            ("mls_welcome", welcome),
        ] {
            let inputs = kept(target);
            for _ in 0..n {
                let (name, base) = &inputs[rng.gen_range(0..inputs.len())];
                let other = &inputs[rng.gen_range(0..inputs.len())].1;
                let mut input = base.clone();
                for _ in 0..rng.gen_range(1..=4) {
                    mutate(&mut rng, &mut input, other);
                }
                let caught = std::panic::catch_unwind(|| body(&input));
                if caught.is_err() {
                    let out = fuzz_dir().join("artifacts").join(target);
                    let _ = std::fs::create_dir_all(&out);
                    let file = out.join(format!(
                        "mutation-{seed}-{}",
                        hex::encode(&sha(&input)[..8])
                    ));
                    let _ = std::fs::write(&file, &input);
                    panic!(
                        "{target}: a mutation of {name} broke an invariant (SOTTO_FUZZ_SEED={seed}); the input is in {}",
                        file.display()
                    );
                }
            }
        }
    }

    fn seed(target: &str, name: &str) -> Vec<u8> {
        std::fs::read(fuzz_dir().join("corpus").join(target).join(name)).expect("a seed")
    }

    /// The seeds do what they were made for: the harness reaches the paths that accept
    /// input (a harness that rejects everything would pass every invariant).
    #[test]
    fn the_mls_seeds_reach_what_they_were_made_for() {
        let base = group_entries_report(&[]);
        assert_eq!(base.state, "active");
        let e = |name| group_entries_report(&seed("mls_group_entry", name));
        let r = e("app-alice");
        assert_eq!(r.received.len(), 1, "{r:?}");
        assert!(r.received[0].contains("hello from alice"), "{r:?}");
        let r = e("app-carol-late-epoch1");
        assert_eq!(r.received.len(), 1, "a message from the past epoch: {r:?}");
        assert!(e("app-alice-replayed").received.is_empty());
        assert_eq!(e("app-alice-twice").received.len(), 1);
        for c in [
            "commit-alice-update",
            "commit-alice-rename",
            "commit-alice-add-dave",
            "commit-alice-remove-carol",
        ] {
            let r = e(c);
            assert_eq!(
                (r.epoch, r.state.as_str()),
                (base.epoch + 1, "active"),
                "{c}: {r:?}"
            );
        }
        assert_eq!(e("commit-alice-remove-bob").state, "removed");
        assert_eq!(e("proposal-carol-leave").proposals, 1);
        let r = e("proposal-then-commit");
        assert_eq!(r.epoch, base.epoch + 1, "{r:?}");
        let r = e("commit-then-app");
        assert_eq!((r.epoch, r.received.len()), (base.epoch + 1, 1), "{r:?}");
        assert!(!base.own_sent);
        assert!(e("own-entry-sent").own_sent);
        let r = e("own-commit-unknown-post");
        assert!(r.resync && r.state == "active", "{r:?}");
        for garbage in ["outsider-app", "member-garbage"] {
            let r = e(garbage);
            assert_eq!(
                (r.received.len(), r.epoch, r.state.as_str()),
                (0, base.epoch, "active")
            );
        }
        assert_eq!(e("outsider-commit").state, "broken");
        let w = |name| welcome_report(&seed("mls_welcome", name));
        for name in ["welcome-group", "welcome-direct", "welcome-pq"] {
            let r = w(name);
            assert!(r.joined.is_some(), "{name}: {r:?}");
            assert_eq!(r.state, "active");
        }
        for name in [
            "welcome-not-for-bob",
            "welcome-known-group",
            "welcome-group-from-outsider",
        ] {
            assert_eq!(w(name).joined, None, "{name}");
        }
    }
}
