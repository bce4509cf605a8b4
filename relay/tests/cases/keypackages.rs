//! The key-package directory: validation on publish, exactly-once claims, last resort.

use std::time::{SystemTime, UNIX_EPOCH};

use openmls::prelude::Lifetime;
use sotto_protocol::relay::{KeyPackageCount, RelayErrorKind, Request, Response};

use crate::client::{Client, Device, kind};
use crate::harness::Relay;
use crate::mls::{CS_ID, KpOpts, PQ, PQ_ID, key_package, kp, last_resort};

fn publish(pool: Vec<Vec<u8>>, last_resort: Option<Vec<u8>>) -> Request {
    Request::PublishKeyPackages {
        ciphersuite: CS_ID,
        key_packages: pool,
        last_resort,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_key_packages_are_rejected() {
    let relay = Relay::start();
    let alice = Device::new(&relay.address("alice"));
    let bob = Device::new(&relay.address("bob"));
    drop(Client::registered(relay.addr, &alice).await);
    let mut b = Client::registered(relay.addr, &bob).await;

    let bad = |index| RelayErrorKind::BadKeyPackage { index };
    // A broken signature.
    let mut tampered = kp(&bob);
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    assert_eq!(kind(b.request(publish(vec![tampered], None)).await), bad(0));
    // A credential naming another address.
    let other_name = key_package(
        &bob,
        KpOpts {
            identity: Some(&format!("{}/d1", relay.address("mallory"))),
            ..KpOpts::default()
        },
    );
    assert_eq!(
        kind(b.request(publish(vec![other_name], None)).await),
        bad(0)
    );
    // Bob's identity, but signed with (and carrying) another account's key.
    let bob_identity = bob.identity();
    let foreign_key = key_package(
        &bob,
        KpOpts {
            identity: Some(&bob_identity),
            signer: Some(&alice),
            ..KpOpts::default()
        },
    );
    assert_eq!(
        kind(b.request(publish(vec![foreign_key], None)).await),
        bad(0)
    );
    // An expired package.
    let expired = key_package(
        &bob,
        KpOpts {
            lifetime: Some(Lifetime::init(now() - 7200, now() - 3600)),
            ..KpOpts::default()
        },
    );
    assert_eq!(kind(b.request(publish(vec![expired], None)).await), bad(0));
    // A second last-resort package in the single-use pool.
    let r = b
        .request(publish(
            vec![kp(&bob), last_resort(&bob)],
            Some(last_resort(&bob)),
        ))
        .await;
    assert_eq!(kind(r), bad(1));
    // A last-resort slot without the extension.
    assert_eq!(
        kind(b.request(publish(vec![], Some(kp(&bob)))).await),
        bad(u32::MAX)
    );
    // Garbage.
    assert_eq!(
        kind(b.request(publish(vec![vec![1, 2, 3]], None)).await),
        bad(0)
    );
    // Rejected batches store nothing.
    let count = b
        .request(Request::CountKeyPackages { ciphersuite: CS_ID })
        .await;
    assert_eq!(
        count,
        Ok(Response::KeyPackageCount(KeyPackageCount {
            ciphersuite: CS_ID,
            available: 0,
            last_resort: false
        }))
    );
    // A good batch.
    let r = b
        .request(publish(vec![kp(&bob), kp(&bob)], Some(last_resort(&bob))))
        .await;
    assert_eq!(
        r,
        Ok(Response::KeyPackageCount(KeyPackageCount {
            ciphersuite: CS_ID,
            available: 2,
            last_resort: true
        }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_are_exactly_once_then_last_resort() {
    const N: usize = 8;
    let relay = Relay::start();
    let bob = Device::new(&relay.address("bob"));
    let mut b = Client::registered(relay.addr, &bob).await;
    let pool: Vec<Vec<u8>> = (0..N).map(|_| kp(&bob)).collect();
    let lr = last_resort(&bob);
    let r = b.request(publish(pool.clone(), Some(lr.clone()))).await;
    assert!(matches!(r, Ok(Response::KeyPackageCount(_))), "{r:?}");

    let mut claimers = Vec::new();
    for i in 0..N {
        let dev = Device::new(&format!("claimer{i}@elsewhere.example"));
        claimers.push(Client::authenticated(relay.addr, &dev).await);
    }
    let claim = Request::ClaimKeyPackage {
        device: bob.device_ref(),
        ciphersuite: CS_ID,
    };
    // Send every claim before reading any answer, so they race in the relay.
    let mut ids = Vec::new();
    for c in &mut claimers {
        ids.push(c.send(claim.clone()).await);
    }
    let mut got = Vec::new();
    for (c, id) in claimers.iter_mut().zip(ids) {
        match c.response(id).await {
            Ok(Response::KeyPackage(k)) => {
                assert!(!k.last_resort, "pool not yet exhausted");
                got.push(k.key_package);
            }
            other => panic!("claim: {other:?}"),
        }
    }
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), N, "every claimer got a distinct package");
    for k in &got {
        assert!(pool.contains(k));
    }
    for _ in 0..2 {
        let Ok(Response::KeyPackage(k)) = claimers[0].request(claim.clone()).await else {
            panic!("last-resort claim")
        };
        assert!(k.last_resort);
        assert_eq!(k.key_package, lr);
    }
    let count = b
        .request(Request::CountKeyPackages { ciphersuite: CS_ID })
        .await;
    assert_eq!(
        count,
        Ok(Response::KeyPackageCount(KeyPackageCount {
            ciphersuite: CS_ID,
            available: 0,
            last_resort: true
        }))
    );
    // Another ciphersuite has nothing.
    let r = claimers[1]
        .request(Request::ClaimKeyPackage {
            device: bob.device_ref(),
            ciphersuite: 0x0003,
        })
        .await;
    assert_eq!(kind(r), RelayErrorKind::NoKeyPackage);
    assert!(relay.metric("sotto_relay_key_package_claims_total") >= N as u64 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_rate_limited_per_claimer() {
    let relay = Relay::start_with(&["--claims-per-min", "3"]);
    let bob = Device::new(&relay.address("bob"));
    let mut b = Client::registered(relay.addr, &bob).await;
    let r = b.request(publish(vec![], Some(last_resort(&bob)))).await;
    assert!(matches!(r, Ok(Response::KeyPackageCount(_))), "{r:?}");
    let eve = Device::new("eve@elsewhere.example");
    let mut e = Client::authenticated(relay.addr, &eve).await;
    let claim = Request::ClaimKeyPackage {
        device: bob.device_ref(),
        ciphersuite: CS_ID,
    };
    for _ in 0..3 {
        assert!(matches!(
            e.request(claim.clone()).await,
            Ok(Response::KeyPackage(_))
        ));
    }
    assert!(matches!(
        kind(e.request(claim.clone()).await),
        RelayErrorKind::RateLimited { .. }
    ));
    // The per-target limit protects Bob from a second claimer too.
    let mallory = Device::new("mallory@elsewhere.example");
    let mut m = Client::authenticated(relay.addr, &mallory).await;
    assert!(matches!(
        kind(m.request(claim).await),
        RelayErrorKind::RateLimited { .. }
    ));
}

/// The post-quantum hybrid (0x004F): the relay parses and validates such packages (the
/// feature is on in its build), keeps them in their own pool and hands them out per suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_quantum_key_packages_are_published_and_claimed() {
    let relay = Relay::start();
    let bob = Device::new(&relay.address("bob"));
    let mut b = Client::registered(relay.addr, &bob).await;
    let pq = |last_resort| {
        key_package(
            &bob,
            KpOpts {
                ciphersuite: Some(PQ),
                last_resort,
                ..KpOpts::default()
            },
        )
    };
    let (one, resort) = (pq(false), pq(true));
    // An ML-KEM-768 + X25519 init key makes the package far larger than an X25519 one.
    assert!(one.len() > kp(&bob).len() + 1000, "{} bytes", one.len());
    // Published under another suite's number, it is refused.
    let r = b.request(publish(vec![one.clone()], None)).await;
    assert_eq!(kind(r), RelayErrorKind::BadKeyPackage { index: 0 });
    // A tampered one is refused too: the relay really checks the signature.
    let mut tampered = pq(false);
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let r = b
        .request(Request::PublishKeyPackages {
            ciphersuite: PQ_ID,
            key_packages: vec![tampered],
            last_resort: None,
        })
        .await;
    assert_eq!(kind(r), RelayErrorKind::BadKeyPackage { index: 0 });
    let r = b
        .request(Request::PublishKeyPackages {
            ciphersuite: PQ_ID,
            key_packages: vec![one.clone()],
            last_resort: Some(resort.clone()),
        })
        .await;
    assert_eq!(
        r,
        Ok(Response::KeyPackageCount(KeyPackageCount {
            ciphersuite: PQ_ID,
            available: 1,
            last_resort: true
        }))
    );
    let eve = Device::new("carol@elsewhere.example");
    let mut c = Client::authenticated(relay.addr, &eve).await;
    // The classical pool is empty: the PQ packages are not handed out for 0x0001.
    let r = c
        .request(Request::ClaimKeyPackage {
            device: bob.device_ref(),
            ciphersuite: CS_ID,
        })
        .await;
    assert_eq!(kind(r), RelayErrorKind::NoKeyPackage);
    let claim = Request::ClaimKeyPackage {
        device: bob.device_ref(),
        ciphersuite: PQ_ID,
    };
    let Ok(Response::KeyPackage(k)) = c.request(claim.clone()).await else {
        panic!("PQ claim")
    };
    assert!(!k.last_resort);
    assert_eq!(k.key_package, one);
    // What was claimed parses back as a PQ key package.
    use openmls::prelude::tls_codec::Deserialize as _;
    let parsed = openmls::prelude::KeyPackageIn::tls_deserialize_exact(&k.key_package)
        .expect("a key package")
        .validate(
            &openmls_rust_crypto::RustCrypto::default(),
            openmls::prelude::ProtocolVersion::Mls10,
        )
        .expect("valid");
    assert_eq!(parsed.ciphersuite(), PQ);
    let Ok(Response::KeyPackage(k)) = c.request(claim).await else {
        panic!("PQ last-resort claim")
    };
    assert!(k.last_resort);
    assert_eq!(k.key_package, resort);
}
