//! Takeover: another install of a device (a restored backup) takes the account over; the
//! relay closes the old install's connections with `session_revoked` and refuses it from
//! then on.

use sotto_protocol::relay::{RelayErrorKind, Request, Response, ServerFrame};

use crate::client::{Client, Device, Incoming, kind, post_id};
use crate::harness::Relay;
use crate::mls::{self, CS_ID, kp, last_resort};

/// Reads until the relay's `Fatal` and close; returns the error kind and close reason.
async fn revoked(c: &mut Client) -> (RelayErrorKind, String) {
    let e = c.fatal().await;
    let reason = c
        .closed()
        .await
        .map(|f| f.reason.to_string())
        .unwrap_or_default();
    (e.kind, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_closes_the_old_install_and_refuses_it_afterwards() {
    let relay = Relay::start();
    let alice = Device::new(&relay.address("alice"));
    // The old install: one connection following its mailbox, one idle.
    let mut following = Client::registered(relay.addr, &alice).await;
    let r = following
        .request(Request::PublishKeyPackages {
            ciphersuite: CS_ID,
            key_packages: vec![kp(&alice), kp(&alice)],
            last_resort: Some(last_resort(&alice)),
        })
        .await;
    assert!(matches!(r, Ok(Response::KeyPackageCount(_))), "{r:?}");
    let r = following
        .request(Request::SubscribeMailbox {
            device: alice.device_ref(),
            after: 0,
        })
        .await;
    assert_eq!(r, Ok(Response::Ok));
    let mut idle = Client::authenticated(relay.addr, &alice).await;
    // Re-authenticating the same install is fine, as always.
    drop(Client::registered(relay.addr, &alice).await);

    // The restored install registers with `take_over`.
    let restored = alice.restored();
    let mut new = Client::registered(relay.addr, &restored).await;

    // Both old connections are closed at once, with `session_revoked`.
    for c in [&mut following, &mut idle] {
        let (kind, reason) = revoked(c).await;
        assert_eq!(kind, RelayErrorKind::SessionRevoked);
        assert!(reason.contains("session_revoked"), "{reason}");
    }
    // Its key packages are gone (the old install may hold their secrets).
    assert_eq!(
        relay.count("SELECT COUNT(*) FROM key_packages"),
        0,
        "the device's key packages are deleted with the takeover"
    );
    // The old install is refused from now on, however it asks.
    for register in [false, true] {
        let mut c = Client::connect(relay.addr).await;
        assert_eq!(
            kind(c.try_auth(&alice, register).await),
            RelayErrorKind::SessionRevoked,
            "register: {register}"
        );
    }
    // The restored install keeps working, and reconnects without taking over again.
    new.ping_ok().await;
    let r = new
        .request(Request::SubscribeMailbox {
            device: restored.device_ref(),
            after: 0,
        })
        .await;
    assert_eq!(r, Ok(Response::Ok));
    let mut again = restored.twin();
    again.take_over = false;
    let mut c = Client::connect(relay.addr).await;
    assert_eq!(
        c.try_auth(&again, false).await,
        Ok(Response::Authenticated { local: true })
    );
    // Taking over is repeatable (a restore of the restore), and only for the key holder.
    let third = alice.restored();
    drop(Client::registered(relay.addr, &third).await);
    let (kind, _) = revoked(&mut new).await;
    assert_eq!(kind, RelayErrorKind::SessionRevoked);
    assert!(relay.metric("sotto_relay_rejections_total{reason=\"session_revoked\"}") >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_are_recorded_per_device_and_not_for_foreign_principals() {
    let relay = Relay::start();
    let elsewhere = Relay::start();
    let alice = Device::new(&relay.address("alice"));
    let bob = Device::new(&relay.address("bob"));
    drop(Client::registered(relay.addr, &alice).await);
    let mut b = Client::registered(relay.addr, &bob).await;
    // Alice's takeover leaves Bob alone.
    drop(Client::registered(relay.addr, &alice.restored()).await);
    b.ping_ok().await;
    // The first install to authenticate is the active one: a second install without
    // `take_over` is refused.
    let carol = Device::new(&relay.address("carol"));
    drop(Client::registered(relay.addr, &carol).await);
    let mut other = carol.restored();
    other.take_over = false;
    let mut c = Client::connect(relay.addr).await;
    assert_eq!(
        kind(c.try_auth(&other, false).await),
        RelayErrorKind::SessionRevoked
    );
    // A foreign principal's installs are not recorded: both installs of a device of
    // another relay authenticate here (that relay is not told of takeovers).
    let dave = Device::new(&elsewhere.address("dave"));
    let mut d1 = Client::authenticated(relay.addr, &dave).await;
    let mut d2 = Client::authenticated(relay.addr, &dave.restored()).await;
    let mut d3 = Client::authenticated(relay.addr, &dave).await;
    for c in [&mut d1, &mut d2, &mut d3] {
        c.ping_ok().await;
    }
    // The relay never announces a revocation to a foreign principal's connections.
    d1.send(Request::Ping).await;
    match d1.recv().await {
        Incoming::Frame(ServerFrame::Response { result, .. }) => {
            assert_eq!(result, Ok(Response::Pong));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(relay.count("SELECT COUNT(*) FROM installs"), 3);
}

/// The restored install's resync: an external commit (openmls's external-commit builder,
/// which removes the device's old leaf) from a principal already on the access list is
/// accepted under the epoch rule; the same from a principal that is not is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_commit_is_accepted_only_from_a_principal_on_the_access_list() {
    use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
    use openmls::prelude::{MlsGroup, MlsMessageBodyIn, MlsMessageIn, OpenMlsProvider as _};

    let relay = Relay::start();
    let alice = Device::new(&relay.address("alice"));
    let bob = Device::new(&relay.address("bob"));
    let eve = Device::new(&relay.address("eve"));
    let mut a = Client::registered(relay.addr, &alice).await;
    let b = Client::registered(relay.addr, &bob).await;
    let mut e = Client::registered(relay.addr, &eve).await;
    // Alice's group with Bob; the log is at epoch 1.
    let mut ga = mls::new_group(&alice);
    let id = mls::gid(&ga);
    let r = a
        .request(Request::CreateGroup {
            group_id: id.clone(),
        })
        .await;
    assert!(matches!(r, Ok(Response::Group(_))), "{r:?}");
    let (commit, welcome) = mls::add(&mut ga, &alice, &kp(&bob));
    let post = |message: Vec<u8>, added: Vec<[u8; 32]>| Request::PostGroup {
        post_id: post_id(),
        group_id: id.clone(),
        message,
        added,
        removed: vec![],
    };
    assert_eq!(
        a.request(post(commit, vec![bob.key()])).await,
        Ok(Response::Accepted { seq: 1, epoch: 1 })
    );
    mls::merge(&mut ga, &alice);
    let mut gb = mls::join(&bob, &welcome);
    // A GroupInfo of epoch 1 with the ratchet tree (what committers will post).
    let info = ga
        .export_group_info(alice.provider.crypto(), &alice.signer, true)
        .expect("group info")
        .tls_serialize_detached()
        .expect("serialize");
    let external = |dev: &Device| -> (MlsGroup, Vec<u8>) {
        let MlsMessageBodyIn::GroupInfo(vgi) = MlsMessageIn::tls_deserialize_exact(&info[..])
            .expect("group info bytes")
            .extract()
        else {
            panic!("not a group info")
        };
        let (group, bundle) = MlsGroup::external_commit_builder()
            .build_group(&dev.provider, vgi, dev.credential())
            .expect("external commit builder")
            .load_psks(dev.provider.storage())
            .expect("psks")
            .build(
                dev.provider.rand(),
                dev.provider.crypto(),
                &dev.signer,
                |_| true,
            )
            .expect("build external commit")
            .finalize(&dev.provider)
            .expect("finalize external commit");
        (group, mls::ser(bundle.commit()))
    };
    // Eve (not on the access list) cannot rejoin by external commit.
    let (_, eve_commit) = external(&eve);
    assert_eq!(
        kind(e.request(post(eve_commit, vec![])).await),
        RelayErrorKind::Forbidden
    );
    // Alice's restored install (same key, empty MLS state) takes over and rejoins.
    let restored = alice.restored();
    let mut r = Client::registered(relay.addr, &restored).await;
    let (mut gr, rejoin) = external(&restored);
    assert_eq!(
        r.request(post(rejoin.clone(), vec![])).await,
        Ok(Response::Accepted { seq: 2, epoch: 2 })
    );
    // Bob follows: Alice's old leaf is gone, her new one is in, and they talk again.
    mls::process(&mut gb, &bob, &rejoin);
    assert_eq!(gb.members().count(), 2);
    assert_eq!(gb.epoch().as_u64(), 2);
    assert_eq!(gr.epoch().as_u64(), 2);
    let hello = mls::app_message(&mut gr, &restored, b"back");
    assert_eq!(
        r.request(post(hello, vec![])).await,
        Ok(Response::Accepted { seq: 3, epoch: 2 })
    );
    // A second external commit at the old epoch loses under the epoch rule.
    let (_, stale) = external(&restored);
    assert!(matches!(
        kind(r.request(post(stale, vec![])).await),
        RelayErrorKind::Conflict {
            current_epoch: 2,
            ..
        }
    ));
    drop(b);
}

/// `ListGroups`: the groups whose access list holds the caller now, for a restored install
/// to find the groups its backup did not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_groups_names_the_groups_whose_access_list_holds_the_caller() {
    let relay = Relay::start();
    let alice = Device::new(&relay.address("alice"));
    let bob = Device::new(&relay.address("bob"));
    let mut a = Client::registered(relay.addr, &alice).await;
    let mut b = Client::registered(relay.addr, &bob).await;
    let ids = |r: Result<Response, sotto_protocol::relay::RelayError>| -> Vec<Vec<u8>> {
        match r {
            Ok(Response::Groups { groups }) => groups.into_iter().map(|g| g.group_id).collect(),
            other => panic!("{other:?}"),
        }
    };
    let create = |id: &[u8]| Request::CreateGroup {
        group_id: id.to_vec(),
    };
    let mut g1 = mls::new_group(&alice);
    let g2 = mls::new_group(&alice);
    let g3 = mls::new_group(&bob);
    let (id1, id2, id3) = (mls::gid(&g1), mls::gid(&g2), mls::gid(&g3));
    for id in [&id1, &id2] {
        assert!(matches!(
            a.request(create(id)).await,
            Ok(Response::Group(_))
        ));
    }
    assert!(matches!(
        b.request(create(&id3)).await,
        Ok(Response::Group(_))
    ));
    let (commit, _welcome) = mls::add(&mut g1, &alice, &kp(&bob));
    let post = |id: &[u8], message: Vec<u8>, added: Vec<[u8; 32]>, removed: Vec<[u8; 32]>| {
        Request::PostGroup {
            post_id: post_id(),
            group_id: id.to_vec(),
            message,
            added,
            removed,
        }
    };
    assert!(matches!(
        a.request(post(&id1, commit, vec![bob.key()], vec![])).await,
        Ok(Response::Accepted { .. })
    ));
    mls::merge(&mut g1, &alice);
    let sorted = |mut v: Vec<Vec<u8>>| {
        v.sort();
        v
    };
    assert_eq!(
        ids(a.request(Request::ListGroups).await),
        sorted(vec![id1.clone(), id2.clone()])
    );
    assert_eq!(
        ids(b.request(Request::ListGroups).await),
        sorted(vec![id1.clone(), id3.clone()])
    );
    // The state is the log's: group 1 is at epoch 1 with one entry.
    let Ok(Response::Groups { groups }) = a.request(Request::ListGroups).await else {
        panic!("list")
    };
    let one = groups.iter().find(|g| g.group_id == id1).expect("group 1");
    assert_eq!((one.epoch, one.head_seq), (1, 1));
    // A removed member no longer finds the group.
    let removal = mls::remove(&mut g1, &alice, &bob.identity());
    assert!(matches!(
        a.request(post(&id1, removal, vec![], vec![bob.key()]))
            .await,
        Ok(Response::Accepted { .. })
    ));
    assert_eq!(ids(b.request(Request::ListGroups).await), vec![id3.clone()]);
    // Alice's restored install (same principal) finds her groups.
    let mut r = Client::registered(relay.addr, &alice.restored()).await;
    assert_eq!(
        ids(r.request(Request::ListGroups).await),
        sorted(vec![id1, id2])
    );
    // Only after authentication.
    let mut anon = Client::connect(relay.addr).await;
    assert_eq!(
        kind(anon.request(Request::ListGroups).await),
        RelayErrorKind::Unauthenticated
    );
}

/// Every committer posts the new epoch's GroupInfo with its commit (`PostCommit`): the
/// relay stores it in the commit's transaction, the latest wins, and only principals on
/// the group's access list get it (`GetGroupInfo`). A GroupInfo for another epoch or
/// group, or with a non-commit, is refused and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_info_is_stored_with_its_commit_and_served_to_the_access_list_only() {
    use openmls::prelude::OpenMlsProvider as _;
    use sotto_protocol::relay::RelayError;

    let relay = Relay::start();
    let alice = Device::new(&relay.address("alice"));
    let bob = Device::new(&relay.address("bob"));
    let eve = Device::new(&relay.address("eve"));
    let mut a = Client::registered(relay.addr, &alice).await;
    let mut b = Client::registered(relay.addr, &bob).await;
    let mut e = Client::registered(relay.addr, &eve).await;
    let mut ga = mls::new_group(&alice);
    let id = mls::gid(&ga);
    let r = a
        .request(Request::CreateGroup {
            group_id: id.clone(),
        })
        .await;
    assert!(matches!(r, Ok(Response::Group(_))), "{r:?}");
    let get = || Request::GetGroupInfo {
        group_id: id.clone(),
    };
    // No commit has carried one yet.
    assert_eq!(kind(a.request(get()).await), RelayErrorKind::UnknownGroup);
    let commit_req =
        |message: Vec<u8>, added: Vec<[u8; 32]>, group_info: Vec<u8>| Request::PostCommit {
            post_id: post_id(),
            group_id: id.clone(),
            message,
            added,
            removed: vec![],
            group_info,
        };
    let (commit, welcome, info1) = mls::add_with_info(&mut ga, &alice, &kp(&bob));
    // A GroupInfo that is not for the commit's next epoch is refused; nothing is stored.
    let (_, _, wrong) = {
        let mut other = mls::new_group(&alice);
        mls::add_with_info(&mut other, &alice, &kp(&bob))
    };
    assert_eq!(
        kind(
            a.request(commit_req(commit.clone(), vec![bob.key()], wrong))
                .await
        ),
        RelayErrorKind::BadMessage
    );
    assert_eq!(
        kind(
            a.request(commit_req(
                commit.clone(),
                vec![bob.key()],
                b"junk".to_vec()
            ))
            .await
        ),
        RelayErrorKind::BadMessage
    );
    assert_eq!(relay.count("SELECT COUNT(*) FROM group_log"), 0);
    assert_eq!(
        a.request(commit_req(commit, vec![bob.key()], info1.clone()))
            .await,
        Ok(Response::Accepted { seq: 1, epoch: 1 })
    );
    mls::merge(&mut ga, &alice);
    let mut gb = mls::join(&bob, &welcome);
    let found = |r: Result<Response, RelayError>| match r {
        Ok(Response::GroupInfoMessage {
            epoch,
            seq,
            group_info,
        }) => (epoch, seq, group_info),
        other => panic!("{other:?}"),
    };
    // Stored with the commit: both members get it; Eve (not on the access list) does not.
    assert_eq!(found(a.request(get()).await), (1, 1, info1.clone()));
    assert_eq!(found(b.request(get()).await), (1, 1, info1.clone()));
    assert_eq!(kind(e.request(get()).await), RelayErrorKind::Forbidden);
    // An application message with a GroupInfo is refused.
    let hello = mls::app_message(&mut gb, &bob, b"hi");
    assert_eq!(
        kind(b.request(commit_req(hello, vec![], info1.clone())).await),
        RelayErrorKind::BadRequest
    );
    // Bob commits: his GroupInfo of epoch 2 replaces Alice's.
    let (update, info2) = mls::self_update_with_info(&mut gb, &bob);
    let post_id2 = post_id();
    let req = Request::PostCommit {
        post_id: post_id2,
        group_id: id.clone(),
        message: update.clone(),
        added: vec![],
        removed: vec![],
        group_info: info2.clone(),
    };
    assert_eq!(
        b.request(req.clone()).await,
        Ok(Response::Accepted { seq: 2, epoch: 2 })
    );
    assert_eq!(found(a.request(get()).await), (2, 2, info2.clone()));
    // A commit that loses the epoch rule stores nothing, its GroupInfo included.
    let (late, late_info) = mls::self_update_with_info(&mut ga, &alice);
    assert!(matches!(
        kind(a.request(commit_req(late, vec![], late_info)).await),
        RelayErrorKind::Conflict { .. }
    ));
    assert_eq!(found(a.request(get()).await), (2, 2, info2.clone()));
    ga.clear_pending_commit(alice.provider.storage())
        .expect("drop the lost commit");
    // A repeated post (same post id) changes nothing.
    assert_eq!(
        b.request(req).await,
        Ok(Response::Accepted { seq: 2, epoch: 2 })
    );
    assert_eq!(found(b.request(get()).await), (2, 2, info2.clone()));
    // A plain commit without a GroupInfo leaves the stored one (its epoch says it is old).
    mls::merge(&mut gb, &bob);
    mls::process(&mut ga, &alice, &update);
    let (update3, _) = mls::self_update_with_info(&mut ga, &alice);
    assert!(matches!(
        mls::post(&mut a, &ga, update3, vec![], vec![]).await,
        Ok(Response::Accepted { seq: 3, epoch: 3 })
    ));
    assert_eq!(found(a.request(get()).await), (2, 2, info2));
    mls::merge(&mut ga, &alice);
    // A removed member no longer gets it.
    let leaf = ga
        .members()
        .find(|m| m.signature_key == bob.key().to_vec())
        .expect("bob's leaf")
        .index;
    let (removal, _, info4) = ga
        .remove_members(&alice.provider, &alice.signer, &[leaf])
        .expect("remove");
    let info4 = mls::info_of(info4.as_ref());
    assert_eq!(
        a.request(Request::PostCommit {
            post_id: post_id(),
            group_id: id.clone(),
            message: mls::ser(&removal),
            added: vec![],
            removed: vec![bob.key()],
            group_info: info4.clone(),
        })
        .await,
        Ok(Response::Accepted { seq: 4, epoch: 4 })
    );
    assert_eq!(found(a.request(get()).await), (4, 4, info4));
    assert_eq!(kind(b.request(get()).await), RelayErrorKind::Forbidden);
    assert_eq!(relay.count("SELECT COUNT(*) FROM group_infos"), 1);
    // Unknown groups and anonymous callers.
    assert_eq!(
        kind(
            a.request(Request::GetGroupInfo {
                group_id: b"nope".to_vec()
            })
            .await
        ),
        RelayErrorKind::UnknownGroup
    );
    let mut anon = Client::connect(relay.addr).await;
    assert_eq!(
        kind(anon.request(get()).await),
        RelayErrorKind::Unauthenticated
    );
}
