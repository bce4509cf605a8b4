//! Invite-only relays: `sotto-relay invite create` offline, registration only with a valid
//! invitation, uses counted with the registration, foreign principals unaffected.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use sotto_protocol::relay::{RelayError, RelayErrorKind, Request, Response};

use crate::client::{Client, Device, kind};
use crate::harness::{Relay, bin};
use crate::mls::kp;

/// Runs `sotto-relay invite create`; returns the token (its last stdout line).
fn invite(admin_key: &Path, extra: &[&str]) -> String {
    let out = Command::new(bin())
        .args(["invite", "create", "--admin-key"])
        .arg(admin_key)
        .args(extra)
        .output()
        .expect("run sotto-relay invite create");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    stdout.lines().last().expect("a token line").to_owned()
}

async fn register_with(relay: &Relay, dev: &Device, token: &str) -> Result<Response, RelayError> {
    let mut c = Client::connect(relay.addr).await;
    let signature = c.proof(dev).await;
    c.request(Request::RegisterInvited {
        address: dev.address.clone(),
        device_id: dev.device_id.clone(),
        public_key: dev.key(),
        install_id: dev.install_id,
        take_over: false,
        signature,
        invite: token.to_owned(),
    })
    .await
}

async fn register_plain(relay: &Relay, dev: &Device) -> Result<Response, RelayError> {
    Client::connect(relay.addr).await.try_auth(dev, true).await
}

fn registered(r: Result<Response, RelayError>) {
    assert!(
        matches!(r, Ok(Response::Authenticated { local: true })),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_needs_a_valid_invitation_whose_uses_are_counted() {
    let keys = tempfile::tempdir().expect("temp dir");
    let admin = keys.path().join("admin.key");
    // Offline, before any relay runs: the key file is created 0600.
    let token = invite(&admin, &["--uses", "2", "--expires", "1h"]);
    assert!(token.starts_with("sotto-invite1."), "{token}");
    let mode = std::fs::metadata(&admin)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let single = invite(&admin, &[]);
    let foreign_token = invite(&keys.path().join("other.key"), &[]);

    let admin_s = admin.to_str().expect("utf-8 path");
    let mut relay = Relay::start_with(&["--invite-only", "--admin-key", admin_s]);
    let dev = |n: &str| Device::new(&relay.address(n));
    let (alice, bob, carol, dave) = (dev("alice"), dev("bob"), dev("carol"), dev("dave"));

    // No invitation, garbage, another relay's.
    assert_eq!(
        kind(register_plain(&relay, &alice).await),
        RelayErrorKind::InviteRequired
    );
    let e = register_with(&relay, &alice, "sotto-invite1.nope").await;
    assert_eq!(kind(e), RelayErrorKind::InviteInvalid);
    let e = register_with(&relay, &alice, &foreign_token)
        .await
        .expect_err("another relay's invitation");
    assert_eq!(e.kind, RelayErrorKind::InviteInvalid);
    assert!(e.message.contains("another relay"), "{}", e.message);
    // A tampered use count.
    let parts: Vec<&str> = token.split('.').collect();
    let forged = [parts[0], parts[1], "200", parts[3], parts[4], parts[5]].join(".");
    let e = register_with(&relay, &alice, &forged)
        .await
        .expect_err("forged");
    assert!(e.message.contains("signature"), "{}", e.message);
    // Nothing was registered by the refusals.
    let mut probe = Client::authenticated(relay.addr, &Device::new("p@elsewhere.example")).await;
    let r = probe
        .request(Request::LookupAccount {
            address: alice.address.clone(),
        })
        .await;
    assert_eq!(kind(r), RelayErrorKind::UnknownAccount);

    // Two uses: alice and bob; re-registering alice (a reconnect) uses nothing, with or
    // without the token; carol finds it used up.
    registered(register_with(&relay, &alice, &token).await);
    registered(register_with(&relay, &alice, &token).await);
    registered(register_plain(&relay, &alice).await);
    registered(register_with(&relay, &bob, &token).await);
    let e = register_with(&relay, &carol, &token)
        .await
        .expect_err("used up");
    assert_eq!(e.kind, RelayErrorKind::InviteInvalid);
    assert!(e.message.contains("used up"), "{}", e.message);
    // The count survives a restart.
    relay.restart();
    let e = register_with(&relay, &carol, &token)
        .await
        .expect_err("still used up");
    assert_eq!(e.kind, RelayErrorKind::InviteInvalid);
    registered(register_with(&relay, &carol, &single).await);
    assert_eq!(
        kind(register_with(&relay, &dave, &single).await),
        RelayErrorKind::InviteInvalid
    );

    // Foreign principals still authenticate, look up and claim: accounts elsewhere talk to
    // invited ones.
    let mut a = Client::registered(relay.addr, &alice).await;
    let r = a
        .request(Request::PublishKeyPackages {
            ciphersuite: crate::mls::CS_ID,
            key_packages: vec![kp(&alice)],
            last_resort: None,
        })
        .await;
    assert!(matches!(r, Ok(Response::KeyPackageCount(_))), "{r:?}");
    let stranger = Device::new("zed@elsewhere.example");
    let mut z = Client::authenticated(relay.addr, &stranger).await;
    let r = z
        .request(Request::ClaimKeyPackage {
            device: alice.device_ref(),
            ciphersuite: crate::mls::CS_ID,
        })
        .await;
    assert!(matches!(r, Ok(Response::KeyPackage(_))), "{r:?}");
}

/// Racing registrations on one invitation: exactly its use count succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_never_exceed_the_uses() {
    const RACERS: usize = 8;
    let keys = tempfile::tempdir().expect("temp dir");
    let admin = keys.path().join("admin.key");
    let token = invite(&admin, &["--uses", "3"]);
    let relay = Relay::start_with(&[
        "--invite-only",
        "--admin-key",
        admin.to_str().expect("utf-8 path"),
    ]);
    let devices: Vec<Device> = (0..RACERS)
        .map(|i| Device::new(&relay.address(&format!("racer{i}"))))
        .collect();
    // Authenticate everything up to the proof, then send every registration at once.
    let mut clients = Vec::new();
    for d in &devices {
        let mut c = Client::connect(relay.addr).await;
        let sig = c.proof(d).await;
        clients.push((c, sig));
    }
    let mut ids = Vec::new();
    for ((c, sig), d) in clients.iter_mut().zip(&devices) {
        ids.push(
            c.send(Request::RegisterInvited {
                address: d.address.clone(),
                device_id: d.device_id.clone(),
                public_key: d.key(),
                install_id: d.install_id,
                take_over: false,
                signature: sig.clone(),
                invite: token.clone(),
            })
            .await,
        );
    }
    let mut ok = 0;
    for ((c, _), id) in clients.iter_mut().zip(ids) {
        match c.response(id).await {
            Ok(Response::Authenticated { local: true }) => ok += 1,
            Err(e) => assert_eq!(e.kind, RelayErrorKind::InviteInvalid, "{e:?}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ok, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_invitation_is_refused() {
    let keys = tempfile::tempdir().expect("temp dir");
    let admin = keys.path().join("admin.key");
    let token = invite(&admin, &["--expires", "1s"]);
    let expires: u64 = token
        .split('.')
        .nth(3)
        .and_then(|e| e.parse().ok())
        .expect("expiry");
    let relay = Relay::start_with(&[
        "--invite-only",
        "--admin-key",
        admin.to_str().expect("utf-8 path"),
    ]);
    crate::harness::eventually("the invitation to expire", async || {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        (now >= expires).then_some(())
    })
    .await;
    let e = register_with(&relay, &Device::new(&relay.address("late")), &token)
        .await
        .expect_err("expired");
    assert_eq!(e.kind, RelayErrorKind::InviteInvalid);
    assert!(e.message.contains("expired"), "{}", e.message);
}

#[test]
fn invite_create_and_invite_only_reject_bad_arguments() {
    let keys = tempfile::tempdir().expect("temp dir");
    let admin = keys.path().join("admin.key");
    let fails = |args: &[&str]| {
        let out = Command::new(bin()).args(args).output().expect("run");
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let a = admin.to_str().expect("utf-8 path");
    fails(&["invite", "create", "--admin-key", a, "--uses", "0"]);
    let e = fails(&["invite", "create", "--admin-key", a, "--expires", "7x"]);
    assert!(e.contains("unknown unit"), "{e}");
    assert!(!admin.exists(), "a refused command creates no key");
    fails(&["--listen", "127.0.0.1:0", "--invite-only"]);
    // A key file others can read is refused.
    invite(&admin, &[]);
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = fails(&["invite", "create", "--admin-key", a]);
    assert!(e.contains("chmod 600"), "{e}");
}
