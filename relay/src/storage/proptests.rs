//! Property tests of the storage rules against a model: the epoch compare-and-set with
//! idempotent post ids, and mailbox cursors and acknowledgements. They run on the SQLite
//! store (the PostgreSQL store runs the same rules through the relay's protocol suite).

use std::collections::HashMap;

use proptest::prelude::*;
use sotto_protocol::relay::content_type;

use super::{
    AppendOutcome, CreateOutcome, MailboxOutcome, NewGroupEntry, NewMailboxPost, SqliteStore, Store,
};

/// `PROPTEST_CASES` when set (a long run), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tmp");
    let store = SqliteStore::open(&dir.path().join("p.sqlite3")).expect("open");
    (dir, store)
}

#[derive(Debug, Clone)]
struct Append {
    /// 0 is the group's creator (a member), 1 never is.
    sender: u8,
    /// The epoch claimed relative to the model's current one (−1, 0, +1).
    delta: i8,
    content_type: u8,
    /// From a small pool, so ids repeat (retries and reuse).
    post: u8,
}

fn append() -> impl Strategy<Value = Append> {
    (
        prop_oneof![9 => Just(0u8), 1 => Just(1u8)],
        -1i8..=1,
        prop_oneof![
            Just(content_type::APPLICATION),
            Just(content_type::PROPOSAL),
            Just(content_type::COMMIT)
        ],
        0u8..12,
    )
        .prop_map(|(sender, delta, content_type, post)| Append {
            sender,
            delta,
            content_type,
            post,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48), ..ProptestConfig::default() })]

    /// Exactly the commits at the current epoch move it, each by one; everything else at
    /// another epoch is a conflict naming the current epoch and head; a post id the
    /// sender already got accepted answers the original result; non-members are refused.
    #[test]
    fn the_epoch_compare_and_set_matches_the_model(ops in proptest::collection::vec(append(), 1..60)) {
        runtime().block_on(async {
            let (_dir, s) = store();
            let g = b"group".to_vec();
            let members = [[0u8; 32], [1u8; 32]];
            let created = s.create_group(g.clone(), members[0], 0).await.expect("create");
            prop_assert!(matches!(created, CreateOutcome::Ok(_)));
            let (mut epoch, mut head) = (0u64, 0u64);
            let mut accepted: HashMap<(u8, u8), (u64, u64)> = HashMap::new();
            for op in ops {
                let claimed = epoch.checked_add_signed(i64::from(op.delta)).unwrap_or(0);
                let got = s
                    .append_group(NewGroupEntry {
                        group_id: g.clone(),
                        sender: members[usize::from(op.sender)],
                        post_id: [op.post; 16],
                        epoch: claimed,
                        content_type: op.content_type,
                        message: vec![op.post, op.content_type],
                        added: vec![],
                        removed: vec![],
                        group_info: None,
                        after: None,
                        now: 1000,
                    })
                    .await
                    .expect("append");
                let want = if op.sender == 1 {
                    AppendOutcome::NotMember
                } else if let Some(&(seq, e)) = accepted.get(&(op.sender, op.post)) {
                    AppendOutcome::Accepted { seq, epoch: e }
                } else if claimed == epoch {
                    head += 1;
                    if op.content_type == content_type::COMMIT {
                        epoch += 1;
                    }
                    accepted.insert((op.sender, op.post), (head, epoch));
                    AppendOutcome::Accepted { seq: head, epoch }
                } else {
                    AppendOutcome::Conflict { current_epoch: epoch, head_seq: head }
                };
                prop_assert_eq!(got, want);
            }
            let state = s.group_state(g.clone()).await.expect("state").expect("exists");
            prop_assert_eq!((state.epoch, state.head_seq), (epoch, head));
            Ok(())
        })?;
    }
}

#[derive(Debug, Clone)]
enum MailboxOp {
    /// A post under this id (from a small pool: repeats are retries).
    Post(u8),
    /// Acknowledge up to the seq of the n-th entry posted so far (clamped).
    Ack(usize),
    /// Read after the seq of the n-th entry posted so far (0: from the start), at most
    /// `limit` entries.
    Read(usize, u32),
}

fn mailbox_op() -> impl Strategy<Value = MailboxOp> {
    prop_oneof![
        5 => (0u8..40).prop_map(MailboxOp::Post),
        1 => (0usize..50).prop_map(MailboxOp::Ack),
        2 => (0usize..50, 1u32..20).prop_map(|(n, l)| MailboxOp::Read(n, l)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48), ..ProptestConfig::default() })]

    /// Seqs only grow; a repeated post id answers its original seq and stores nothing;
    /// an ack deletes exactly the entries at or below it; a read returns the model's
    /// remaining entries after its cursor, in order, at most `limit`.
    #[test]
    fn mailbox_cursors_and_acks_match_the_model(ops in proptest::collection::vec(mailbox_op(), 1..80)) {
        runtime().block_on(async {
            let (_dir, s) = store();
            let device = [7u8; 32];
            s.register("bob".into(), "d1".into(), device, 0).await.expect("register");
            // Model: every stored entry (seq, payload), which are still there, the seq of
            // each post id.
            let mut posted: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut acked_to = 0u64;
            let mut by_id: HashMap<u8, u64> = HashMap::new();
            let mut n = 0u32;
            for op in ops {
                match op {
                    MailboxOp::Post(id) => {
                        n += 1;
                        let payload = format!("payload {n}").into_bytes();
                        let got = s
                            .post_mailbox(NewMailboxPost {
                                sender: [1; 32],
                                sender_address: "alice@relay.test".into(),
                                post_id: [id; 16],
                                recipients: vec![("bob".into(), "d1".into())],
                                payload: payload.clone(),
                                now: 1000,
                            })
                            .await
                            .expect("post");
                        let MailboxOutcome::Posted(seqs) = got else {
                            return Err(TestCaseError::fail(format!("not posted: {got:?}")));
                        };
                        prop_assert_eq!(seqs.len(), 1);
                        match by_id.get(&id) {
                            Some(&seq) => prop_assert_eq!(seqs[0], seq, "a retry answers the original seq"),
                            None => {
                                let last = posted.last().map_or(0, |p| p.0);
                                prop_assert!(seqs[0] > last, "seqs grow");
                                by_id.insert(id, seqs[0]);
                                posted.push((seqs[0], payload));
                            }
                        }
                    }
                    MailboxOp::Ack(i) => {
                        let up_to = i.checked_sub(1).and_then(|i| posted.get(i)).map_or(0, |p| p.0);
                        s.ack_mailbox(device, up_to).await.expect("ack");
                        acked_to = acked_to.max(up_to);
                    }
                    MailboxOp::Read(i, limit) => {
                        let after = i.checked_sub(1).and_then(|i| posted.get(i)).map_or(0, |p| p.0);
                        let got = s.read_mailbox(device, after, limit).await.expect("read");
                        let want: Vec<(u64, Vec<u8>)> = posted
                            .iter()
                            .filter(|(seq, _)| *seq > after && *seq > acked_to)
                            .take(limit as usize)
                            .cloned()
                            .collect();
                        let got: Vec<(u64, Vec<u8>)> =
                            got.into_iter().map(|e| (e.seq, e.payload)).collect();
                        prop_assert_eq!(got, want);
                    }
                }
            }
            Ok(())
        })?;
    }
}
