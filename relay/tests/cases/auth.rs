//! Authentication, registration and who may read or post where.

use sotto_protocol::relay::{DeviceRef, Push, RelayErrorKind, Request, Response};

use crate::client::{Client, Device, kind, post_id};
use crate::harness::Relay;
use crate::mls::{CS_ID, kp, last_resort};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_then_authenticate_and_lookup() {
    let relay = Relay::start();
    let alice = Device::new(&relay.address("alice"));
    let mut c = Client::registered(relay.addr, &alice).await;
    assert_eq!(c.hello.relay_url, relay.url);
    // A repeated registration with the same key is fine; another key for the name is not.
    let mut again = Client::connect(relay.addr).await;
    assert_eq!(
        again.try_auth(&alice, true).await,
        Ok(Response::Authenticated { local: true })
    );
    let mallory = Device::new(&relay.address("alice"));
    let mut m = Client::connect(relay.addr).await;
    assert_eq!(
        kind(m.try_auth(&mallory, true).await),
        RelayErrorKind::NameTaken
    );
    // Authenticating a local address with an unregistered key is refused.
    assert_eq!(
        kind(m.try_auth(&mallory, false).await),
        RelayErrorKind::BadProof
    );
    // An invalid name cannot be registered.
    let bad = Device::new(&relay.address("Bad!Name"));
    assert_eq!(
        kind(m.try_auth(&bad, true).await),
        RelayErrorKind::InvalidAddress
    );

    let mut a2 = Client::authenticated(relay.addr, &alice).await;
    let r = a2
        .request(Request::LookupAccount {
            address: alice.address.clone(),
        })
        .await;
    let Ok(Response::Account(acct)) = r else {
        panic!("lookup: {r:?}")
    };
    assert_eq!(acct.devices.len(), 1);
    assert_eq!(acct.devices[0].identity_key, alice.key());
    assert_eq!(acct.devices[0].device_id, "d1");
    c.ping_ok().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_proofs_are_refused() {
    let relay = Relay::start();
    let alice = Device::new(&relay.address("alice"));
    drop(Client::registered(relay.addr, &alice).await);

    // A signature by another key over the right message.
    let other = Device::new(&relay.address("alice"));
    let mut c = Client::connect(relay.addr).await;
    let nonce = c.nonce().await;
    let msg = alice.auth_message(&c.hello.relay_url, &nonce);
    let r = c
        .request(Client::auth_request(&alice, other.sign(&msg), false))
        .await;
    assert_eq!(kind(r), RelayErrorKind::BadProof);

    // A signature made for another relay URL.
    let nonce = c.nonce().await;
    let msg = alice.auth_message("wss://elsewhere.example/sotto/v1", &nonce);
    let r = c
        .request(Client::auth_request(&alice, alice.sign(&msg), false))
        .await;
    assert_eq!(kind(r), RelayErrorKind::BadProof);

    // A valid proof replayed: on the same connection the nonce is spent ...
    let mut first = Client::connect(relay.addr).await;
    let proof = first.proof(&alice).await;
    let r = first
        .request(Client::auth_request(&alice, proof.clone(), false))
        .await;
    assert!(matches!(r, Ok(Response::Authenticated { local: true })));
    let mut again = Client::connect(relay.addr).await;
    // ... and on another connection the nonce is different.
    let r = again
        .request(Client::auth_request(&alice, proof.clone(), false))
        .await;
    assert_eq!(kind(r), RelayErrorKind::BadProof);
    // After a failed attempt, even a correct signature needs a fresh challenge.
    let mut third = Client::connect(relay.addr).await;
    let good_for_third = {
        let n = third.nonce().await;
        alice.sign(&alice.auth_message(&third.hello.relay_url, &n))
    };
    let r = third
        .request(Client::auth_request(&alice, proof, false))
        .await;
    assert_eq!(kind(r), RelayErrorKind::BadProof);
    let r = third
        .request(Client::auth_request(&alice, good_for_third, false))
        .await;
    assert_eq!(kind(r), RelayErrorKind::BadProof);
    assert!(matches!(
        third.try_auth(&alice, false).await,
        Ok(Response::Authenticated { .. })
    ));
    assert!(relay.metric("sotto_relay_rejections_total{reason=\"bad_proof\"}") >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_reads_a_mailbox() {
    let relay = Relay::start();
    let alice = Device::new(&relay.address("alice"));
    let bob = Device::new(&relay.address("bob"));
    let mut a = Client::registered(relay.addr, &alice).await;
    let mut b = Client::registered(relay.addr, &bob).await;
    let r = a
        .request(Request::PostMailbox {
            post_id: post_id(),
            recipients: vec![bob.device_ref()],
            payload: b"for bob".to_vec(),
        })
        .await;
    assert!(matches!(r, Ok(Response::Posted { .. })), "{r:?}");
    // Alice cannot read or acknowledge Bob's mailbox.
    let r = a
        .request(Request::SubscribeMailbox {
            device: bob.device_ref(),
            after: 0,
        })
        .await;
    assert_eq!(kind(r), RelayErrorKind::Forbidden);
    let r = a
        .request(Request::AckMailbox {
            device: bob.device_ref(),
            up_to: u64::MAX >> 1,
        })
        .await;
    assert_eq!(kind(r), RelayErrorKind::Forbidden);
    // An unauthenticated connection cannot either.
    let mut anon = Client::connect(relay.addr).await;
    let r = anon
        .request(Request::SubscribeMailbox {
            device: bob.device_ref(),
            after: 0,
        })
        .await;
    assert_eq!(kind(r), RelayErrorKind::Unauthenticated);
    // Bob can, and the entry is still there.
    b.subscribe_mailbox(&bob, 0).await;
    let Push::Mailbox { entries } = b.push().await else {
        panic!("expected mailbox push")
    };
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].payload, b"for bob");
    assert_eq!(entries[0].sender, alice.key());
    assert_eq!(entries[0].sender_address, alice.address);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_principal_claims_and_posts() {
    let relay = Relay::start();
    let bob = Device::new(&relay.address("bob"));
    let mut b = Client::registered(relay.addr, &bob).await;
    let r = b
        .request(Request::PublishKeyPackages {
            ciphersuite: CS_ID,
            key_packages: vec![kp(&bob)],
            last_resort: Some(last_resort(&bob)),
        })
        .await;
    assert!(matches!(r, Ok(Response::KeyPackageCount(_))), "{r:?}");
    assert_eq!(
        b.request(Request::SubscribeMailbox {
            device: bob.device_ref(),
            after: 0
        })
        .await,
        Ok(Response::Ok)
    );

    // Carol is registered on another relay: she proves her key for her own address.
    let carol = Device::new("carol@other-relay.example:8443");
    let mut c = Client::connect(relay.addr).await;
    assert_eq!(
        c.try_auth(&carol, false).await,
        Ok(Response::Authenticated { local: false })
    );
    // She cannot register here under her foreign address.
    let mut c2 = Client::connect(relay.addr).await;
    assert_eq!(
        kind(c2.try_auth(&carol, true).await),
        RelayErrorKind::InvalidAddress
    );

    let r = c
        .request(Request::LookupAccount {
            address: bob.address.clone(),
        })
        .await;
    assert!(matches!(r, Ok(Response::Account(_))), "{r:?}");
    let r = c
        .request(Request::ClaimKeyPackage {
            device: bob.device_ref(),
            ciphersuite: CS_ID,
        })
        .await;
    let Ok(Response::KeyPackage(claimed)) = r else {
        panic!("claim: {r:?}")
    };
    assert!(!claimed.last_resort);
    let r = c
        .request(Request::PostMailbox {
            post_id: post_id(),
            recipients: vec![bob.device_ref()],
            payload: b"hello from afar".to_vec(),
        })
        .await;
    assert!(matches!(r, Ok(Response::Posted { .. })), "{r:?}");
    let Push::Mailbox { entries } = b.push().await else {
        panic!("expected a live mailbox push")
    };
    assert_eq!(entries[0].payload, b"hello from afar");
    assert_eq!(entries[0].sender, carol.key());
    // A foreign principal has no mailbox or key packages here.
    let r = c
        .request(Request::SubscribeMailbox {
            device: DeviceRef {
                address: carol.address.clone(),
                device_id: carol.device_id.clone(),
            },
            after: 0,
        })
        .await;
    assert_eq!(kind(r), RelayErrorKind::Forbidden);
    let r = c
        .request(Request::PublishKeyPackages {
            ciphersuite: CS_ID,
            key_packages: vec![kp(&carol)],
            last_resort: None,
        })
        .await;
    assert_eq!(kind(r), RelayErrorKind::Forbidden);
    // Mailbox posts to unknown devices name the culprit.
    let r = c
        .request(Request::PostMailbox {
            post_id: post_id(),
            recipients: vec![bob.device_ref(), carol.device_ref()],
            payload: b"x".to_vec(),
        })
        .await;
    assert_eq!(kind(r), RelayErrorKind::UnknownRecipient { index: 1 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_for_many_is_stored_once_and_acked_per_mailbox() {
    let relay = Relay::start();
    let alice = Device::new(&relay.address("alice"));
    let bob = Device::new(&relay.address("bob"));
    let carol = Device::new(&relay.address("carol"));
    let mut a = Client::registered(relay.addr, &alice).await;
    let mut b = Client::registered(relay.addr, &bob).await;
    let mut c = Client::registered(relay.addr, &carol).await;
    let id = post_id();
    let post = Request::PostMailbox {
        post_id: id,
        recipients: vec![bob.device_ref(), carol.device_ref()],
        payload: vec![7u8; 1000],
    };
    let Ok(Response::Posted { seqs }) = a.request(post.clone()).await else {
        panic!("post")
    };
    assert_eq!(seqs.len(), 2);
    // A retry with the same post id stores nothing new.
    assert_eq!(
        a.request(post).await,
        Ok(Response::Posted { seqs: seqs.clone() })
    );
    let blobs = relay.count("SELECT COUNT(*) FROM mailbox_blobs");
    assert_eq!(blobs, 1);
    for (client, dev, seq) in [(&mut b, &bob, seqs[0]), (&mut c, &carol, seqs[1])] {
        client.subscribe_mailbox(dev, 0).await;
        let Push::Mailbox { entries } = client.push().await else {
            panic!("push")
        };
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].seq, seq);
        let ack = Request::AckMailbox {
            device: dev.device_ref(),
            up_to: seq,
        };
        assert_eq!(client.request(ack).await, Ok(Response::Ok));
    }
    let blobs = relay.count("SELECT COUNT(*) FROM mailbox_blobs");
    assert_eq!(
        blobs, 0,
        "the shared payload is dropped once every mailbox acked"
    );
}
