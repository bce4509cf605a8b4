//! [`Store`] for [`SqliteStore`]: each operation is one closure on the writer thread
//! (writes) or on a reader connection (reads), running the SQL in `sql_directory` and
//! `sql_groups`.

use std::future::Future;

use sotto_protocol::relay::{
    ClaimedKeyPackage, GroupState, InstallId, KeyPackageCount, MailboxEntry, Principal,
};
use tokio::sync::broadcast;

use super::sqlite::SqliteStore;
use super::{
    AppendOutcome, Change, CreateOutcome, GroupInfoOutcome, InstallOutcome, InviteUse,
    MailboxOutcome, NewGroupEntry, NewKeyPackage, NewMailboxPost, ReadOutcome, RegisterOutcome,
    Store, StoreError, sql_directory as dir, sql_groups as grp,
};

impl Store for SqliteStore {
    async fn register(
        &self,
        name: String,
        device_id: String,
        key: Principal,
        now: u64,
    ) -> Result<RegisterOutcome, StoreError> {
        self.write("register", move |c, _| {
            dir::register(c, &name, &device_id, &key, now)
        })
        .await
    }

    async fn register_invited(
        &self,
        name: String,
        device_id: String,
        key: Principal,
        now: u64,
        invite: InviteUse,
    ) -> Result<RegisterOutcome, StoreError> {
        self.write("register invited", move |c, _| {
            dir::register_invited(c, &name, &device_id, &key, now, &invite)
        })
        .await
    }

    async fn device_key(
        &self,
        name: String,
        device_id: String,
    ) -> Result<Option<Principal>, StoreError> {
        self.read("device key", move |c| dir::device_key(c, &name, &device_id))
            .await
    }

    async fn devices(&self, name: String) -> Result<Vec<(String, Principal)>, StoreError> {
        self.read("devices", move |c| dir::devices(c, &name)).await
    }

    async fn claim_install(
        &self,
        key: Principal,
        install: InstallId,
        take_over: bool,
        now: u64,
    ) -> Result<InstallOutcome, StoreError> {
        self.write("claim install", move |c, changes| {
            dir::claim_install(c, &key, &install, take_over, now, changes)
        })
        .await
    }

    async fn active_install(&self, key: Principal) -> Result<Option<InstallId>, StoreError> {
        self.read("active install", move |c| dir::active_install(c, &key))
            .await
    }

    async fn publish_key_packages(
        &self,
        device: Principal,
        ciphersuite: u16,
        pool: Vec<NewKeyPackage>,
        last_resort: Option<NewKeyPackage>,
        now: u64,
    ) -> Result<KeyPackageCount, StoreError> {
        self.write("publish key packages", move |c, _| {
            dir::publish(c, &device, ciphersuite, &pool, last_resort.as_ref())?;
            dir::count(c, &device, ciphersuite, now)
        })
        .await
    }

    async fn count_key_packages(
        &self,
        device: Principal,
        ciphersuite: u16,
        now: u64,
    ) -> Result<KeyPackageCount, StoreError> {
        self.read("count key packages", move |c| {
            dir::count(c, &device, ciphersuite, now)
        })
        .await
    }

    async fn claim_key_package(
        &self,
        device: Principal,
        ciphersuite: u16,
        now: u64,
    ) -> Result<Option<ClaimedKeyPackage>, StoreError> {
        self.write("claim key package", move |c, _| {
            dir::claim(c, &device, ciphersuite, now)
        })
        .await
    }

    fn post_mailbox(
        &self,
        post: NewMailboxPost,
    ) -> impl Future<Output = Result<MailboxOutcome, StoreError>> + Send + use<> {
        self.write("post mailbox", move |c, changes| {
            dir::post_mailbox(c, &post, changes)
        })
    }

    async fn read_mailbox(
        &self,
        device: Principal,
        after: u64,
        limit: u32,
    ) -> Result<Vec<MailboxEntry>, StoreError> {
        self.read("read mailbox", move |c| {
            dir::read_mailbox(c, &device, after, limit)
        })
        .await
    }

    async fn ack_mailbox(&self, device: Principal, up_to: u64) -> Result<(), StoreError> {
        self.write("ack mailbox", move |c, _| {
            dir::ack_mailbox(c, &device, up_to)
        })
        .await
    }

    async fn create_group(
        &self,
        group_id: Vec<u8>,
        creator: Principal,
        now: u64,
    ) -> Result<CreateOutcome, StoreError> {
        self.write("create group", move |c, _| {
            grp::create(c, &group_id, &creator, now)
        })
        .await
    }

    fn append_group(
        &self,
        entry: NewGroupEntry,
    ) -> impl Future<Output = Result<AppendOutcome, StoreError>> + Send + use<> {
        self.write("append group entry", move |c, changes| {
            grp::append(c, &entry, changes)
        })
    }

    async fn read_group(
        &self,
        group_id: Vec<u8>,
        reader: Principal,
        after: u64,
        limit: u32,
    ) -> Result<ReadOutcome, StoreError> {
        self.read("read group", move |c| {
            grp::read(c, &group_id, &reader, after, limit)
        })
        .await
    }

    async fn ack_group(
        &self,
        group_id: Vec<u8>,
        member: Principal,
        seq: u64,
    ) -> Result<(), StoreError> {
        self.write("ack group", move |c, _| {
            grp::ack(c, &group_id, &member, seq)
        })
        .await
    }

    async fn member_groups(
        &self,
        member: Principal,
        limit: u32,
    ) -> Result<Vec<GroupState>, StoreError> {
        self.read("member groups", move |c| {
            grp::member_groups(c, &member, limit)
        })
        .await
    }

    async fn group_info(
        &self,
        group_id: Vec<u8>,
        reader: Principal,
    ) -> Result<GroupInfoOutcome, StoreError> {
        self.read("group info", move |c| {
            grp::group_info(c, &group_id, &reader)
        })
        .await
    }

    async fn group_state(&self, group_id: Vec<u8>) -> Result<Option<GroupState>, StoreError> {
        self.read("group state", move |c| grp::state(c, &group_id))
            .await
    }

    async fn prune(&self, now: u64, max_age_secs: u64) -> Result<u64, StoreError> {
        self.write("prune", move |c, _| {
            let cutoff = now.saturating_sub(max_age_secs);
            Ok(grp::prune(c, cutoff)? + dir::prune(c, now, cutoff)?)
        })
        .await
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn durability(&self) -> &str {
        self.durability
    }

    fn healthy(&self) -> bool {
        self.working()
    }
}

#[cfg(test)]
mod tests {
    use sotto_protocol::relay::content_type;

    use super::*;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SqliteStore::open(&dir.path().join("t.sqlite3")).expect("open");
        (dir, store)
    }

    fn kp(byte: u8, not_after: u64) -> NewKeyPackage {
        NewKeyPackage {
            data: vec![byte],
            not_before: 0,
            not_after,
        }
    }

    fn entry(group: &[u8], sender: u8, epoch: u64, ct: u8, post: u8) -> NewGroupEntry {
        NewGroupEntry {
            group_id: group.to_vec(),
            sender: [sender; 32],
            post_id: [post; 16],
            epoch,
            content_type: ct,
            message: vec![post],
            added: vec![],
            removed: vec![],
            group_info: None,
            after: None,
            now: 1000,
        }
    }

    #[tokio::test]
    async fn durability_is_full() {
        let (_d, s) = store();
        assert_eq!(s.durability(), "full");
    }

    #[tokio::test]
    async fn claims_skip_expired_and_fall_back_to_last_resort() {
        let (_d, s) = store();
        let dev = [1u8; 32];
        let count = s
            .publish_key_packages(dev, 1, vec![kp(1, 50), kp(2, 500)], Some(kp(9, 500)), 10)
            .await
            .expect("publish");
        assert_eq!((count.available, count.last_resort), (2, true));
        // At t=100 the first package has expired: it is never handed out.
        let c = s.claim_key_package(dev, 1, 100).await.expect("claim");
        assert_eq!(
            c.map(|c| (c.key_package, c.last_resort)),
            Some((vec![2], false))
        );
        let c = s.claim_key_package(dev, 1, 100).await.expect("claim");
        assert_eq!(
            c.map(|c| (c.key_package, c.last_resort)),
            Some((vec![9], true))
        );
        // Past the last-resort lifetime too: nothing.
        assert_eq!(s.claim_key_package(dev, 1, 600).await.expect("claim"), None);
        assert_eq!(s.claim_key_package(dev, 2, 100).await.expect("claim"), None);
    }

    #[tokio::test]
    async fn epoch_rule_and_idempotency() {
        let (_d, s) = store();
        let g = b"g".to_vec();
        assert!(matches!(
            s.create_group(g.clone(), [1; 32], 0).await.expect("create"),
            CreateOutcome::Ok(_)
        ));
        assert_eq!(
            s.create_group(g.clone(), [2; 32], 0).await.expect("create"),
            CreateOutcome::Exists
        );
        let commit = content_type::COMMIT;
        let app = content_type::APPLICATION;
        let r = s
            .append_group(entry(&g, 1, 1, commit, 1))
            .await
            .expect("append");
        assert_eq!(
            r,
            AppendOutcome::Conflict {
                current_epoch: 0,
                head_seq: 0
            }
        );
        let r = s
            .append_group(entry(&g, 1, 0, app, 2))
            .await
            .expect("append");
        assert_eq!(r, AppendOutcome::Accepted { seq: 1, epoch: 0 });
        let r = s
            .append_group(entry(&g, 1, 0, commit, 3))
            .await
            .expect("append");
        assert_eq!(r, AppendOutcome::Accepted { seq: 2, epoch: 1 });
        // A second commit for epoch 0 loses; its retry under the first post id does not.
        let r = s
            .append_group(entry(&g, 1, 0, commit, 4))
            .await
            .expect("append");
        assert_eq!(
            r,
            AppendOutcome::Conflict {
                current_epoch: 1,
                head_seq: 2
            }
        );
        let r = s
            .append_group(entry(&g, 1, 0, commit, 3))
            .await
            .expect("append");
        assert_eq!(r, AppendOutcome::Accepted { seq: 2, epoch: 1 });
        let r = s
            .append_group(entry(&g, 2, 1, app, 5))
            .await
            .expect("append");
        assert_eq!(r, AppendOutcome::NotMember);
        let r = s
            .append_group(entry(b"nope", 1, 0, app, 6))
            .await
            .expect("append");
        assert_eq!(r, AppendOutcome::UnknownGroup);
    }

    #[tokio::test]
    async fn access_list_deltas_bound_reads() {
        let (_d, s) = store();
        let g = b"g".to_vec();
        let (alice, bob) = ([1u8; 32], [2u8; 32]);
        s.create_group(g.clone(), alice, 0).await.expect("create");
        let mut add = entry(&g, 1, 0, content_type::COMMIT, 1);
        add.added = vec![bob];
        assert_eq!(
            s.append_group(add).await.expect("add"),
            AppendOutcome::Accepted { seq: 1, epoch: 1 }
        );
        s.append_group(entry(&g, 2, 1, content_type::APPLICATION, 2))
            .await
            .expect("bob posts");
        let mut remove = entry(&g, 1, 1, content_type::COMMIT, 3);
        remove.removed = vec![bob];
        s.append_group(remove).await.expect("remove");
        s.append_group(entry(&g, 1, 2, content_type::APPLICATION, 4))
            .await
            .expect("after");
        let read = s.read_group(g.clone(), bob, 0, 100).await.expect("read");
        let ReadOutcome::Entries {
            entries,
            removed_at,
            head_seq,
        } = read
        else {
            panic!("entries")
        };
        assert_eq!(
            entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!((removed_at, head_seq), (Some(3), 4));
        assert_eq!(
            s.append_group(entry(&g, 2, 2, content_type::APPLICATION, 5))
                .await
                .expect("append"),
            AppendOutcome::NotMember
        );
        assert_eq!(
            s.read_group(g.clone(), [3; 32], 0, 10).await.expect("read"),
            ReadOutcome::NotMember
        );
    }

    #[tokio::test]
    async fn retention_waits_for_the_slowest_member() {
        let (_d, s) = store();
        let g = b"g".to_vec();
        let (alice, bob) = ([1u8; 32], [2u8; 32]);
        s.create_group(g.clone(), alice, 0).await.expect("create");
        let mut add = entry(&g, 1, 0, content_type::COMMIT, 1);
        add.added = vec![bob];
        s.append_group(add).await.expect("add");
        for i in 2..6u8 {
            s.append_group(entry(&g, 1, 1, content_type::APPLICATION, i))
                .await
                .expect("post");
        }
        s.ack_group(g.clone(), alice, 5).await.expect("ack");
        s.ack_group(g.clone(), bob, 3).await.expect("ack");
        s.prune(1000, 10_000).await.expect("prune");
        assert_eq!(
            s.read_group(g.clone(), alice, 0, 10).await.expect("read"),
            ReadOutcome::Gap { oldest_seq: 4 }
        );
        let ReadOutcome::Entries { entries, .. } =
            s.read_group(g.clone(), bob, 3, 10).await.expect("read")
        else {
            panic!("entries")
        };
        assert_eq!(
            entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![4, 5]
        );
        // Past the maximum age everything goes, read or not.
        s.prune(1000 + 20_000, 10_000).await.expect("prune");
        assert_eq!(
            s.read_group(g.clone(), bob, 3, 10).await.expect("read"),
            ReadOutcome::Gap { oldest_seq: 6 }
        );
    }

    #[tokio::test]
    async fn mailbox_payloads_are_shared_and_changes_follow_commit() {
        let (_d, s) = store();
        let mut changes = s.changes();
        let (bob, carol) = ([2u8; 32], [3u8; 32]);
        let post = NewMailboxPost {
            sender: [1; 32],
            sender_address: "alice@x".into(),
            post_id: [7; 16],
            recipients: vec![("bob".into(), "d".into()), ("carol".into(), "d".into())],
            payload: b"welcome".to_vec(),
            now: 5,
        };
        for (name, key) in [("bob", bob), ("carol", carol)] {
            s.register(name.into(), "d".into(), key, 1)
                .await
                .expect("register");
        }
        let mut unknown = post.clone();
        unknown.recipients.push(("dave".into(), "d".into()));
        assert_eq!(
            s.post_mailbox(unknown).await.expect("post"),
            MailboxOutcome::UnknownRecipient(2)
        );
        let MailboxOutcome::Posted(seqs) = s.post_mailbox(post.clone()).await.expect("post") else {
            panic!("posted")
        };
        assert_eq!(seqs.len(), 2);
        assert_eq!(
            s.post_mailbox(post).await.expect("repost"),
            MailboxOutcome::Posted(seqs.clone())
        );
        assert_eq!(
            changes.try_recv().ok(),
            Some(Change::Mailbox { device: bob })
        );
        assert_eq!(
            changes.try_recv().ok(),
            Some(Change::Mailbox { device: carol })
        );
        assert!(changes.try_recv().is_err(), "the repeat notified nothing");
        let got = s.read_mailbox(bob, 0, 10).await.expect("read");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload, b"welcome");
        s.ack_mailbox(bob, seqs[0]).await.expect("ack");
        assert!(s.read_mailbox(bob, 0, 10).await.expect("read").is_empty());
        assert_eq!(s.read_mailbox(carol, 0, 10).await.expect("read").len(), 1);
    }

    #[tokio::test]
    async fn a_write_failing_half_way_leaves_nothing_and_its_batch_still_commits() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let (_d, s) = store();
        // Hold the writer inside a batch so the next two writes queue up for the next one.
        let release = Arc::new(AtomicBool::new(false));
        let r = release.clone();
        let (started, writer_busy) = std::sync::mpsc::channel();
        let hold = s.write("hold", move |_, _| {
            let _ = started.send(());
            while !r.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            Ok(())
        });
        writer_busy.recv().expect("the writer runs the holding job");
        let runs = Arc::new(AtomicUsize::new(0));
        let n = runs.clone();
        let good = s.write("good", move |c, _| {
            n.fetch_add(1, Ordering::Relaxed);
            dir::register(c, "bob", "d", &[2; 32], 1)
        });
        let bad = s.write("bad", |c, _| {
            dir::register(c, "carol", "d", &[3; 32], 1)?;
            c.execute("INSERT INTO no_such_table VALUES (1)", [])
        });
        release.store(true, Ordering::Release);
        hold.await.expect("hold");
        assert_eq!(good.await.expect("good"), RegisterOutcome::Registered);
        assert!(matches!(
            bad.await,
            Err(StoreError::Sqlite { context: "bad", .. })
        ));
        assert_eq!(
            runs.load(Ordering::Relaxed),
            2,
            "the batch ran again with savepoints"
        );
        assert_eq!(
            s.device_key("bob".into(), "d".into()).await.expect("read"),
            Some([2; 32])
        );
        assert_eq!(
            s.device_key("carol".into(), "d".into())
                .await
                .expect("read"),
            None,
            "the failed write left nothing behind"
        );
        // A write that fails before changing anything needs no second run.
        let n = runs.clone();
        let good = s.write("good", move |c, _| {
            n.fetch_add(1, Ordering::Relaxed);
            dir::register(c, "dave", "d", &[4; 32], 1)
        });
        let bad = s.write("bad", |c, _| {
            c.execute("INSERT INTO no_such_table VALUES (1)", [])
        });
        assert_eq!(good.await.expect("good"), RegisterOutcome::Registered);
        assert!(bad.await.is_err());
        assert_eq!(runs.load(Ordering::Relaxed), 3);
    }

    /// Holds the syncer before its `fdatasync` while `held`, and counts the syncs it let
    /// through or is holding.
    #[derive(Default)]
    struct SyncHold {
        state: std::sync::Mutex<(bool, usize, bool)>,
        changed: std::sync::Condvar,
    }

    impl SyncHold {
        /// `(held, syncs entered, fail)`.
        fn lock(&self) -> std::sync::MutexGuard<'_, (bool, usize, bool)> {
            self.state.lock().unwrap_or_else(|e| e.into_inner())
        }

        fn hook(self: &std::sync::Arc<Self>) -> super::super::sqlite::SyncHook {
            let me = std::sync::Arc::clone(self);
            std::sync::Arc::new(move || {
                let mut s = me.lock();
                s.1 += 1;
                me.changed.notify_all();
                while s.0 {
                    s = me.changed.wait(s).unwrap_or_else(|e| e.into_inner());
                }
                if s.2 {
                    return Err(std::io::Error::other("injected fdatasync failure"));
                }
                Ok(())
            })
        }

        fn set(&self, f: impl FnOnce(&mut (bool, usize, bool))) {
            f(&mut self.lock());
            self.changed.notify_all();
        }

        /// Waits (generously) until the syncer has entered `n` syncs in all.
        fn wait_entered(&self, n: usize) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            let mut s = self.lock();
            while s.1 < n {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                assert!(!left.is_zero(), "the syncer never reached sync {n}");
                s = self
                    .changed
                    .wait_timeout(s, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }

    fn held_store() -> (tempfile::TempDir, SqliteStore, std::sync::Arc<SyncHold>) {
        let dir = tempfile::tempdir().expect("tmp");
        let hold = std::sync::Arc::new(SyncHold::default());
        let store = SqliteStore::open_with_sync_hook(&dir.path().join("t.sqlite3"), hold.hook())
            .expect("open");
        (dir, store, hold)
    }

    /// Waits (generously) for a condition that another thread makes true.
    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !f() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting: {what}"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_reader_sees_a_committed_batch_before_its_sync() {
        let (dir, s, hold) = held_store();
        let s = std::sync::Arc::new(s);
        let bob = [2u8; 32];
        s.register("bob".into(), "d".into(), bob, 1)
            .await
            .expect("register");
        let mut changes = s.changes();
        hold.set(|h| h.0 = true);
        let entered = hold.lock().1;
        let post = NewMailboxPost {
            sender: [1; 32],
            sender_address: "alice@x".into(),
            post_id: [7; 16],
            recipients: vec![("bob".into(), "d".into())],
            payload: b"not yet durable".to_vec(),
            now: 5,
        };
        let posting = tokio::spawn(s.post_mailbox(post));
        // The batch is committed and its sync is being held.
        tokio::task::spawn_blocking({
            let hold = hold.clone();
            move || hold.wait_entered(entered + 1)
        })
        .await
        .expect("wait");
        // It is in the database (a connection outside the store sees the commit) ...
        let raw = rusqlite::Connection::open(dir.path().join("t.sqlite3")).expect("raw");
        let rows: i64 = raw
            .query_row("SELECT COUNT(*) FROM mailbox", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 1, "the batch was committed before its sync");
        // ... but no reader of the store sees it, nobody was answered or woken.
        let reader = {
            let s = s.clone();
            tokio::spawn(async move { s.read_mailbox(bob, 0, 10).await })
        };
        until("the read waits at the gate (or ends)", || {
            s.readers_waiting() == 1 || reader.is_finished()
        })
        .await;
        assert!(!reader.is_finished(), "a read saw an unsynced batch");
        assert!(
            !posting.is_finished(),
            "a write was answered before its sync"
        );
        assert!(
            changes.try_recv().is_err(),
            "a wake-up went out before the sync"
        );
        hold.set(|h| h.0 = false);
        assert!(matches!(
            posting.await.expect("join").expect("post"),
            MailboxOutcome::Posted(_)
        ));
        let got = reader.await.expect("join").expect("read");
        assert_eq!(got.len(), 1, "after the sync the reader sees the row");
        assert_eq!(got[0].payload, b"not yet durable");
        assert_eq!(
            changes.recv().await.ok(),
            Some(Change::Mailbox { device: bob })
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_begun_before_a_commit_keeps_its_durable_snapshot() {
        let (_d, s, hold) = held_store();
        let s = std::sync::Arc::new(s);
        s.register("bob".into(), "d".into(), [2; 32], 1)
            .await
            .expect("register");
        // A read takes its snapshot, then waits inside its transaction.
        let (inside, read_began) = std::sync::mpsc::channel();
        let (go, wait_go) = std::sync::mpsc::channel::<()>();
        let wait_go = std::sync::Mutex::new(wait_go);
        let reading = {
            let s = s.clone();
            tokio::spawn(async move {
                s.read("probe", move |c| {
                    let _ = inside.send(());
                    let _ = wait_go
                        .lock()
                        .map(|rx| rx.recv_timeout(std::time::Duration::from_secs(60)));
                    c.query_row("SELECT COUNT(*) FROM devices", [], |r| r.get::<_, i64>(0))
                })
                .await
            })
        };
        tokio::task::spawn_blocking(move || {
            read_began
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("the read began")
        })
        .await
        .expect("wait");
        // A write commits meanwhile; its sync is held.
        hold.set(|h| h.0 = true);
        let entered = hold.lock().1;
        let writing = {
            let s = s.clone();
            tokio::spawn(async move { s.register("carol".into(), "d".into(), [3; 32], 1).await })
        };
        tokio::task::spawn_blocking({
            let hold = hold.clone();
            move || hold.wait_entered(entered + 1)
        })
        .await
        .expect("wait");
        let _ = go.send(());
        assert_eq!(
            reading.await.expect("join").expect("read"),
            1,
            "the read kept the snapshot it began with (bob only)"
        );
        hold.set(|h| h.0 = false);
        assert_eq!(
            writing.await.expect("join").expect("register"),
            RegisterOutcome::Registered
        );
        assert_eq!(
            s.device_key("carol".into(), "d".into())
                .await
                .expect("read"),
            Some([3; 32])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_runs_the_next_batch_against_the_unsynced_one_while_it_syncs() {
        let (_d, s, hold) = held_store();
        let g = b"g".to_vec();
        s.create_group(g.clone(), [1; 32], 0).await.expect("create");
        hold.set(|h| h.0 = true);
        let entered = hold.lock().1;
        // Batch n: a commit moves the epoch to 1; its sync is held.
        let commit = tokio::spawn(s.append_group(entry(&g, 1, 0, content_type::COMMIT, 1)));
        tokio::task::spawn_blocking({
            let hold = hold.clone();
            move || hold.wait_entered(entered + 1)
        })
        .await
        .expect("wait");
        // Batch n + 1 runs while batch n syncs: a retry of the same post, a rival commit
        // for epoch 0, and a probe that says when it ran.
        let retry = tokio::spawn(s.append_group(entry(&g, 1, 0, content_type::COMMIT, 1)));
        let rival = tokio::spawn(s.append_group(entry(&g, 1, 0, content_type::COMMIT, 2)));
        let (ran, probe_ran) = std::sync::mpsc::channel();
        let probe = tokio::spawn(s.write("probe", move |c, _| {
            let _ = ran.send(());
            c.query_row("SELECT epoch FROM groups", [], |r| r.get::<_, u64>(0))
        }));
        tokio::task::spawn_blocking(move || {
            probe_ran
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("the next batch runs during the held sync")
        })
        .await
        .expect("wait");
        assert_eq!(hold.lock().1, entered + 1, "still the first sync");
        for (what, task) in [
            ("commit", commit.is_finished()),
            ("retry", retry.is_finished()),
        ] {
            assert!(!task, "{what} answered before its batch was synced");
        }
        assert!(!probe.is_finished() && !rival.is_finished());
        hold.set(|h| h.0 = false);
        let accepted = AppendOutcome::Accepted { seq: 1, epoch: 1 };
        assert_eq!(commit.await.expect("join").expect("commit"), accepted);
        assert_eq!(retry.await.expect("join").expect("retry"), accepted);
        assert_eq!(
            rival.await.expect("join").expect("rival"),
            AppendOutcome::Conflict {
                current_epoch: 1,
                head_seq: 1
            }
        );
        assert_eq!(probe.await.expect("join").expect("probe"), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_stops_the_store_and_nothing_is_acknowledged() {
        let (_d, s, hold) = held_store();
        s.register("bob".into(), "d".into(), [2; 32], 1)
            .await
            .expect("register");
        assert!(s.healthy());
        hold.set(|h| h.2 = true);
        let r = s.register("carol".into(), "d".into(), [3; 32], 1).await;
        assert!(
            matches!(r, Err(StoreError::Unavailable { .. })),
            "a write whose sync failed is retryable, not acknowledged: {r:?}"
        );
        assert!(!s.healthy());
        hold.set(|h| h.2 = false);
        // Fail-stop: nothing is written or read any more, even once syncs would work.
        let r = s.register("dave".into(), "d".into(), [4; 32], 1).await;
        assert!(matches!(r, Err(StoreError::Unavailable { .. })), "{r:?}");
        let r = s.device_key("bob".into(), "d".into()).await;
        assert!(matches!(r, Err(StoreError::Unavailable { .. })), "{r:?}");
    }
}
