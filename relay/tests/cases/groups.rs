//! Group logs: access lists, the epoch rule, idempotency, removal, retention.

use openmls::prelude::{MlsGroup, OpenMlsProvider as _};
use sotto_protocol::relay::{
    GroupEntry, MailboxPayload, PostId, Push, RelayErrorKind, Request, Response, WIRE_VERSION,
    WelcomeEnvelope, content_type,
};

use crate::client::{Client, Device, kind, post_id};
use crate::harness::{Relay, eventually};
use crate::mls::{self, CS_ID, gid, kp, post};

struct Pair {
    alice: Device,
    bob: Device,
    a: Client,
    b: Client,
    ga: MlsGroup,
    gb: MlsGroup,
}

async fn create(c: &mut Client, group: &MlsGroup) {
    let r = c
        .request(Request::CreateGroup {
            group_id: gid(group),
        })
        .await;
    let Ok(Response::Group(state)) = r else {
        panic!("create group: {r:?}")
    };
    assert_eq!((state.epoch, state.head_seq), (0, 0));
}

async fn accepted(r: Result<Response, sotto_protocol::relay::RelayError>) -> (u64, u64) {
    match r {
        Ok(Response::Accepted { seq, epoch }) => (seq, epoch),
        other => panic!("expected acceptance, got {other:?}"),
    }
}

async fn read_all(c: &mut Client, group: &[u8], after: u64) -> (Vec<GroupEntry>, Option<u64>) {
    let r = c
        .request(Request::ReadGroup {
            group_id: group.to_vec(),
            after,
            limit: 1000,
        })
        .await;
    match r {
        Ok(Response::GroupEntries {
            entries,
            removed_at,
            ..
        }) => (entries, removed_at),
        other => panic!("read group: {other:?}"),
    }
}

/// Alice creates a group and adds Bob the way a daemon would: claim, commit with the
/// access-list delta, Welcome envelope to Bob's mailbox, Bob joins from `join_seq`.
async fn pair(relay: &Relay) -> Pair {
    let alice = Device::new(&relay.address("alice"));
    let bob = Device::new(&relay.address("bob"));
    let mut a = Client::registered(relay.addr, &alice).await;
    let mut b = Client::registered(relay.addr, &bob).await;
    let r = b
        .request(Request::PublishKeyPackages {
            ciphersuite: CS_ID,
            key_packages: vec![kp(&bob)],
            last_resort: None,
        })
        .await;
    assert!(r.is_ok(), "{r:?}");
    let mut ga = mls::new_group(&alice);
    create(&mut a, &ga).await;
    let Ok(Response::KeyPackage(claimed)) = a
        .request(Request::ClaimKeyPackage {
            device: bob.device_ref(),
            ciphersuite: CS_ID,
        })
        .await
    else {
        panic!("claim")
    };
    let (commit, welcome) = mls::add(&mut ga, &alice, &claimed.key_package);
    let (seq, epoch) = accepted(post(&mut a, &ga, commit, vec![bob.key()], vec![]).await).await;
    assert_eq!((seq, epoch), (1, 1));
    mls::merge(&mut ga, &alice);
    let envelope = MailboxPayload::Welcome(WelcomeEnvelope {
        relay_url: relay.url.clone(),
        group_id: gid(&ga),
        join_seq: seq + 1,
        welcome,
    });
    let mut payload = vec![WIRE_VERSION];
    payload.extend(postcard::to_stdvec(&envelope).expect("encode envelope"));
    let r = a
        .request(Request::PostMailbox {
            post_id: post_id(),
            recipients: vec![bob.device_ref()],
            payload,
        })
        .await;
    assert!(matches!(r, Ok(Response::Posted { .. })), "{r:?}");

    b.subscribe_mailbox(&bob, 0).await;
    let Push::Mailbox { entries } = b.push().await else {
        panic!("mailbox push")
    };
    let MailboxPayload::Welcome(env) =
        postcard::from_bytes(&entries[0].payload[1..]).expect("decode envelope")
    else {
        panic!("not a welcome")
    };
    assert_eq!(env.relay_url, relay.url);
    let gb = mls::join(&bob, &env.welcome);
    assert_eq!(gid(&gb), env.group_id);
    let (log, _) = read_all(&mut b, &env.group_id, env.join_seq - 1).await;
    assert!(log.is_empty());
    Pair {
        alice,
        bob,
        a,
        b,
        ga,
        gb,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_members_cannot_read_or_post() {
    let relay = Relay::start();
    let mut p = pair(&relay).await;
    let id = gid(&p.ga);
    let eve = Device::new(&relay.address("eve"));
    let mut e = Client::registered(relay.addr, &eve).await;
    let read = Request::ReadGroup {
        group_id: id.clone(),
        after: 0,
        limit: 10,
    };
    assert_eq!(kind(e.request(read).await), RelayErrorKind::Forbidden);
    let sub = Request::SubscribeGroup {
        group_id: id.clone(),
        after: 0,
    };
    assert_eq!(kind(e.request(sub).await), RelayErrorKind::Forbidden);
    let info = Request::GroupInfo {
        group_id: id.clone(),
    };
    assert_eq!(kind(e.request(info).await), RelayErrorKind::Forbidden);
    let junk = Request::PostGroup {
        post_id: post_id(),
        group_id: id.clone(),
        message: b"definitely a commit".to_vec(),
        added: vec![eve.key()],
        removed: vec![],
    };
    assert_eq!(kind(e.request(junk).await), RelayErrorKind::BadMessage);
    // A real MLS commit for this group id, at the current epoch, from a group of Eve's own.
    let mut fake = mls::impostor_group(&eve, &id);
    let commit = mls::self_update(&mut fake, &eve);
    let r = e
        .request(Request::PostGroup {
            post_id: post_id(),
            group_id: id.clone(),
            message: commit,
            added: vec![eve.key()],
            removed: vec![p.alice.key()],
        })
        .await;
    assert_eq!(kind(r), RelayErrorKind::Forbidden);
    assert_eq!(
        kind(
            e.request(Request::CreateGroup {
                group_id: id.clone()
            })
            .await
        ),
        RelayErrorKind::GroupExists
    );
    // A message whose framing names another group than the request.
    let msg = mls::app_message(&mut p.ga, &p.alice, b"hi");
    let r =
        p.a.request(Request::PostGroup {
            post_id: post_id(),
            group_id: b"another group".to_vec(),
            message: msg,
            added: vec![],
            removed: vec![],
        })
        .await;
    assert_eq!(kind(r), RelayErrorKind::BadMessage);
    let Ok(Response::Group(state)) = p.a.request(Request::GroupInfo { group_id: id }).await else {
        panic!("group info")
    };
    assert_eq!(
        (state.epoch, state.head_seq),
        (1, 1),
        "nothing was appended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_reads_its_removal_and_nothing_after() {
    let relay = Relay::start();
    let mut p = pair(&relay).await;
    let id = gid(&p.ga);
    let sub = Request::SubscribeGroup {
        group_id: id.clone(),
        after: 1,
    };
    assert_eq!(p.b.request(sub).await, Ok(Response::Ok));
    let hello = mls::app_message(&mut p.ga, &p.alice, b"hello bob");
    assert_eq!(
        accepted(post(&mut p.a, &p.ga, hello, vec![], vec![]).await).await,
        (2, 1)
    );
    let Push::Group { entries, .. } = p.b.push().await else {
        panic!("live group push")
    };
    assert_eq!(entries.len(), 1);
    mls::process(&mut p.gb, &p.bob, &entries[0].message);

    let removal = mls::remove(&mut p.ga, &p.alice, &p.bob.identity());
    let r = post(&mut p.a, &p.ga, removal, vec![], vec![p.bob.key()]).await;
    assert_eq!(accepted(r).await, (3, 2));
    mls::merge(&mut p.ga, &p.alice);
    let after = mls::app_message(&mut p.ga, &p.alice, b"bob is gone");
    assert_eq!(
        accepted(post(&mut p.a, &p.ga, after, vec![], vec![]).await).await,
        (4, 2)
    );

    // The live subscription delivers the removal commit, says so, and ends.
    let Push::Group {
        entries,
        removed_at,
        ..
    } = p.b.push().await
    else {
        panic!("removal push")
    };
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3]);
    assert_eq!(removed_at, Some(3));
    mls::process(&mut p.gb, &p.bob, &entries[0].message);

    let (entries, removed_at) = read_all(&mut p.b, &id, 1).await;
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(removed_at, Some(3));
    assert_eq!(entries[1].content_type, content_type::COMMIT);
    let (entries, _) = read_all(&mut p.b, &id, 3).await;
    assert!(entries.is_empty(), "nothing after the removal");
    // Bob can no longer post.
    let bob_again = p.bob.twin();
    let mut stale = mls::impostor_group(&bob_again, &id);
    let commit = mls::self_update(&mut stale, &bob_again);
    let r = post(&mut p.b, &p.ga, commit, vec![], vec![]).await;
    assert!(matches!(
        kind(r),
        RelayErrorKind::Forbidden | RelayErrorKind::Conflict { .. }
    ));
    p.b.ping_ok().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_at_a_lower_or_higher_epoch_conflict_and_post_ids_are_idempotent() {
    let relay = Relay::start();
    let alice = Device::new(&relay.address("alice"));
    let mut a = Client::registered(relay.addr, &alice).await;
    let mut g = mls::new_group(&alice);
    create(&mut a, &g).await;
    let c0 = mls::self_update(&mut g, &alice);
    mls::merge(&mut g, &alice);
    let c1 = mls::self_update(&mut g, &alice);
    mls::merge(&mut g, &alice);
    let group_id = gid(&g);
    let post_c = |post_id, message: &Vec<u8>| Request::PostGroup {
        post_id,
        group_id: group_id.clone(),
        message: message.clone(),
        added: vec![],
        removed: vec![],
    };
    // Higher than current.
    let r = a.request(post_c(post_id(), &c1)).await;
    assert_eq!(
        kind(r),
        RelayErrorKind::Conflict {
            current_epoch: 0,
            head_seq: 0
        }
    );
    let id0 = post_id();
    assert_eq!(accepted(a.request(post_c(id0, &c0)).await).await, (1, 1));
    assert_eq!(
        accepted(a.request(post_c(post_id(), &c1)).await).await,
        (2, 2)
    );
    // Lower than current.
    let r = a.request(post_c(post_id(), &c0)).await;
    assert_eq!(
        kind(r),
        RelayErrorKind::Conflict {
            current_epoch: 2,
            head_seq: 2
        }
    );
    // The same post id again: the original answer, nothing stored.
    assert_eq!(accepted(a.request(post_c(id0, &c0)).await).await, (1, 1));
    let app = mls::app_message(&mut g, &alice, b"once");
    let app_id = post_id();
    assert_eq!(
        accepted(a.request(post_c(app_id, &app)).await).await,
        (3, 2)
    );
    assert_eq!(
        accepted(a.request(post_c(app_id, &app)).await).await,
        (3, 2)
    );
    let (entries, _) = read_all(&mut a, &gid(&g), 0).await;
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].post_id, id0);
    assert_eq!(entries[2].post_id, app_id);
    assert!(relay.metric("sotto_relay_conflicts_total") >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_commits_never_share_an_epoch() {
    const ROUNDS: u64 = 20;
    let relay = Relay::start();
    let mut p = pair(&relay).await;
    let id = gid(&p.ga);
    for round in 0..ROUNDS {
        let epoch = p.ga.epoch().as_u64();
        assert_eq!(epoch, p.gb.epoch().as_u64());
        let ca = mls::self_update(&mut p.ga, &p.alice);
        let cb = mls::self_update(&mut p.gb, &p.bob);
        let ra = post(&mut p.a, &p.ga, ca.clone(), vec![], vec![]);
        let rb = post(&mut p.b, &p.gb, cb.clone(), vec![], vec![]);
        let (ra, rb) = tokio::join!(ra, rb);
        let won_a = matches!(ra, Ok(Response::Accepted { .. }));
        let won_b = matches!(rb, Ok(Response::Accepted { .. }));
        assert!(
            won_a ^ won_b,
            "round {round}: exactly one wins: {ra:?} {rb:?}"
        );
        let (loser, lost) = if won_a { (&rb, &ra) } else { (&ra, &rb) };
        let Ok(Response::Accepted {
            epoch: new_epoch, ..
        }) = lost
        else {
            unreachable!()
        };
        assert_eq!(*new_epoch, epoch + 1);
        assert!(matches!(
            loser,
            Err(e) if matches!(e.kind, RelayErrorKind::Conflict { current_epoch, .. } if current_epoch == epoch + 1)
        ));
        if won_a {
            mls::merge(&mut p.ga, &p.alice);
            p.gb.clear_pending_commit(p.bob.provider.storage())
                .expect("clear");
            mls::process(&mut p.gb, &p.bob, &ca);
        } else {
            mls::merge(&mut p.gb, &p.bob);
            p.ga.clear_pending_commit(p.alice.provider.storage())
                .expect("clear");
            mls::process(&mut p.ga, &p.alice, &cb);
        }
    }
    let (entries, _) = read_all(&mut p.a, &id, 0).await;
    let epochs: Vec<u64> = entries
        .iter()
        .filter(|e| e.content_type == content_type::COMMIT)
        .map(|e| e.epoch)
        .collect();
    assert_eq!(
        epochs,
        (0..=ROUNDS).collect::<Vec<_>>(),
        "one commit per epoch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_and_application_messages_never_move_the_epoch() {
    let relay = Relay::start();
    let mut p = pair(&relay).await;
    let id = gid(&p.ga);
    let app = mls::app_message(&mut p.ga, &p.alice, b"one");
    assert_eq!(
        accepted(post(&mut p.a, &p.ga, app, vec![], vec![]).await).await,
        (2, 1)
    );
    let stale_app = mls::app_message(&mut p.ga, &p.alice, b"two");
    let proposal = mls::propose_update(&mut p.gb, &p.bob);
    // Only commits may carry access-list changes.
    let r = post(&mut p.b, &p.gb, proposal.clone(), vec![p.bob.key()], vec![]).await;
    assert_eq!(kind(r), RelayErrorKind::BadRequest);
    assert_eq!(
        accepted(post(&mut p.b, &p.gb, proposal, vec![], vec![]).await).await,
        (3, 1)
    );
    let info =
        p.a.request(Request::GroupInfo {
            group_id: id.clone(),
        })
        .await;
    let Ok(Response::Group(state)) = info else {
        panic!("info")
    };
    assert_eq!((state.epoch, state.head_seq), (1, 3));
    // Bob commits (his own proposal included); Alice's message from epoch 1 is now stale.
    let commit = mls::self_update(&mut p.gb, &p.bob);
    assert_eq!(
        accepted(post(&mut p.b, &p.gb, commit, vec![], vec![]).await).await,
        (4, 2)
    );
    let r = post(&mut p.a, &p.ga, stale_app, vec![], vec![]).await;
    assert_eq!(
        kind(r),
        RelayErrorKind::Conflict {
            current_epoch: 2,
            head_seq: 4
        }
    );
    let (entries, _) = read_all(&mut p.a, &id, 0).await;
    let kinds: Vec<u8> = entries.iter().map(|e| e.content_type).collect();
    assert_eq!(
        kinds,
        vec![
            content_type::COMMIT,
            content_type::APPLICATION,
            content_type::PROPOSAL,
            content_type::COMMIT
        ]
    );
    assert_eq!(
        entries.iter().map(|e| e.epoch).collect::<Vec<_>>(),
        vec![0, 1, 1, 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_unread_entries_and_reports_gaps() {
    let relay = Relay::start_with(&["--retention-interval-ms", "50"]);
    let mut p = pair(&relay).await;
    let id = gid(&p.ga);
    for i in 0..3u8 {
        let m = mls::app_message(&mut p.ga, &p.alice, &[i]);
        accepted(post(&mut p.a, &p.ga, m, vec![], vec![]).await).await;
    }
    // Alice has read everything; Bob only up to seq 2. Entries Bob has not read stay.
    // Bob acknowledges first: Alice's cursor (0) holds everything until her ack, so no
    // retention pass (every 50 ms) can prune through 1 only (Bob's cursor before his
    // ack) and be seen as a gap at 2 before the next pass.
    for (c, seq) in [(&mut p.b, 2u64), (&mut p.a, 4)] {
        let ack = Request::AckGroup {
            group_id: id.clone(),
            seq,
        };
        assert_eq!(c.request(ack).await, Ok(Response::Ok));
    }
    let b = &mut p.b;
    let oldest = eventually("retention to drop read entries", async || {
        let r = b
            .request(Request::ReadGroup {
                group_id: id.clone(),
                after: 0,
                limit: 10,
            })
            .await;
        match r {
            Err(e) => match e.kind {
                RelayErrorKind::Gap { oldest_seq } => Some(oldest_seq),
                other => panic!("unexpected {other:?}"),
            },
            Ok(_) => None,
        }
    })
    .await;
    assert_eq!(oldest, 3);
    let (entries, _) = read_all(&mut p.b, &id, 2).await;
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3, 4]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_posts_are_stored_and_answered_in_order() {
    const N: usize = 40;
    let relay = Relay::start();
    let alice = Device::new(&relay.address("alice"));
    let mut a = Client::registered(relay.addr, &alice).await;
    let mut g = mls::new_group(&alice);
    create(&mut a, &g).await;
    let mut sent = Vec::new();
    for i in 0..N {
        let pid = post_id();
        let message = mls::app_message(&mut g, &alice, format!("m{i}").as_bytes());
        let id = a
            .send(Request::PostGroup {
                post_id: pid,
                group_id: gid(&g),
                message,
                added: vec![],
                removed: vec![],
            })
            .await;
        sent.push((id, pid));
    }
    for (n, (id, _)) in sent.iter().enumerate() {
        assert_eq!(accepted(a.response(*id).await).await, (n as u64 + 1, 0));
    }
    let (entries, _) = read_all(&mut a, &gid(&g), 0).await;
    let stored: Vec<_> = entries.iter().map(|e| e.post_id).collect();
    let expected: Vec<_> = sent.iter().map(|(_, p)| *p).collect();
    assert_eq!(stored, expected);
}

/// `PostGroupAfter`: a post whose predecessor is not in the log is refused `out_of_order`
/// and stores nothing; once the predecessor is posted, it is accepted after it. A retry
/// of an accepted post answers its original result whatever it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_after_one_not_in_the_log_is_refused_and_stores_nothing() {
    let relay = Relay::start();
    let alice = Device::new(&relay.address("alice"));
    let mut a = Client::registered(relay.addr, &alice).await;
    let mut g = mls::new_group(&alice);
    create(&mut a, &g).await;
    let (first, second) = (post_id(), post_id());
    let m1 = mls::app_message(&mut g, &alice, b"first");
    let m2 = mls::app_message(&mut g, &alice, b"second");
    let after_first = |message: Vec<u8>| Request::PostGroupAfter {
        post_id: second,
        group_id: gid(&g),
        message,
        after: first,
    };
    assert_eq!(
        kind(a.request(after_first(m2.clone())).await),
        RelayErrorKind::OutOfOrder
    );
    assert!(
        read_all(&mut a, &gid(&g), 0).await.0.is_empty(),
        "nothing stored"
    );
    let r = a
        .request(Request::PostGroup {
            post_id: first,
            group_id: gid(&g),
            message: m1,
            added: vec![],
            removed: vec![],
        })
        .await;
    assert_eq!(accepted(r).await, (1, 0));
    assert_eq!(
        accepted(a.request(after_first(m2.clone())).await).await,
        (2, 0)
    );
    // A retry of the accepted post, naming anything, answers the original result.
    let retry = Request::PostGroupAfter {
        post_id: second,
        group_id: gid(&g),
        message: m2,
        after: post_id(),
    };
    assert_eq!(accepted(a.request(retry).await).await, (2, 0));
    let (entries, _) = read_all(&mut a, &gid(&g), 0).await;
    let stored: Vec<_> = entries.iter().map(|e| e.post_id).collect();
    assert_eq!(stored, vec![first, second]);
    assert!(relay.metric("sotto_relay_rejections_total{reason=\"out_of_order\"}") >= 1);
}

/// The ordering bug of issue 12: a connection pipelines a run of posts, each naming its
/// predecessor, through a relay at a small request rate. Once one post of the run is
/// refused `rate_limited`, no later post of the run is stored, even one that arrives
/// when the bucket has a token again (refused `out_of_order`); the client posts the run
/// again from its first unaccepted post after the retry time, and the log ends up with
/// every post exactly once, in the order sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_post_keeps_the_later_posts_of_its_run_out_until_it_is_retried() {
    const N: usize = 80;
    let relay = Relay::start_with(&["--rate", "20", "--burst", "10"]);
    let alice = Device::new(&relay.address("alice"));
    let mut a = Client::registered(relay.addr, &alice).await;
    let mut g = mls::new_group(&alice);
    create(&mut a, &g).await;
    let run: Vec<(PostId, Vec<u8>)> = (0..N)
        .map(|i| {
            (
                post_id(),
                mls::app_message(&mut g, &alice, format!("m{i}").as_bytes()),
            )
        })
        .collect();
    let request = |i: usize| {
        let (post_id, message) = run[i].clone();
        match i {
            0 => Request::PostGroup {
                post_id,
                group_id: gid(&g),
                message,
                added: vec![],
                removed: vec![],
            },
            _ => Request::PostGroupAfter {
                post_id,
                group_id: gid(&g),
                message,
                after: run[i - 1].0,
            },
        }
    };
    let (mut next, mut rounds, mut out_of_order) = (0usize, 0usize, 0usize);
    while next < N {
        rounds += 1;
        assert!(rounds < 10_000, "no progress");
        // The rest of the run, back to back.
        let mut ids = Vec::new();
        for i in next..N {
            ids.push((i, a.send(request(i)).await));
        }
        let mut refused_at: Option<(usize, u64)> = None;
        for (i, id) in ids {
            match a.response(id).await {
                Ok(Response::Accepted { seq, .. }) => {
                    assert!(refused_at.is_none(), "post {i} stored after a refused one");
                    assert_eq!(seq, i as u64 + 1, "stored in the order sent");
                    next = i + 1;
                }
                Err(e) => match (e.kind, refused_at) {
                    (RelayErrorKind::RateLimited { retry_after_ms }, None) => {
                        refused_at = Some((i, retry_after_ms));
                    }
                    (RelayErrorKind::RateLimited { .. }, Some(_)) => {}
                    (RelayErrorKind::OutOfOrder, Some(_)) => out_of_order += 1,
                    (other, _) => panic!("post {i}: unexpected {other:?}: {}", e.message),
                },
                Ok(other) => panic!("post {i}: {other:?}"),
            }
        }
        let Some((first_refused, retry_after_ms)) = refused_at else {
            continue;
        };
        assert_eq!(first_refused, next);
        assert!(retry_after_ms > 0);
        // Nothing is sent while waiting, so after 100 ms the bucket holds at least two
        // tokens (20/s; a rate limiter's clock, not a synchronisation: waiting longer only
        // adds tokens). The next post of the run, sent alone now, gets a token and is
        // still refused: its predecessor is not in the log.
        let refill = std::time::Duration::from_millis(100);
        tokio::time::sleep(refill).await;
        if next + 1 < N {
            let r = a.request(request(next + 1)).await;
            assert_eq!(kind(r), RelayErrorKind::OutOfOrder);
            out_of_order += 1;
            tokio::time::sleep(refill).await;
        }
    }
    assert!(rounds > 1, "the run was never rate-limited");
    assert!(out_of_order > 0);
    // Read on another connection (its own bucket).
    let mut reader = Client::registered(relay.addr, &alice).await;
    let mut stored = Vec::new();
    while stored.len() < N {
        let (entries, _) = read_all(&mut reader, &gid(&g), stored.len() as u64).await;
        assert!(!entries.is_empty(), "the log ends early");
        stored.extend(entries.iter().map(|e| e.post_id));
    }
    let expected: Vec<PostId> = run.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        stored, expected,
        "every post exactly once, in the order sent"
    );
}
