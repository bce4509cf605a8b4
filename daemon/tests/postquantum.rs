//! Post-quantum conversations: the ML-KEM-768 + X25519 hybrid ciphersuite end to end,
//! ciphersuite validation, the config default, a member without the suite, and a
//! 100-member PQ group (real daemon, real relay, raw protocol members).

use std::time::{Duration, Instant};

use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::*;
use serde_json::{Value, json};
use sotto_protocol::relay::{Request, Response};

use crate::support::relay_client::{Conn, Member};
use crate::support::{Daemon, Relay};

const PQ: &str = "MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519";
const CLASSIC: &str = "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519";
const PQ_SUITE: Ciphersuite = Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519;

fn error_of(r: &Value) -> (String, String) {
    let e = &r["error"];
    (
        e["data"]["kind"].as_str().unwrap_or_default().to_owned(),
        e["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn a_post_quantum_direct_conversation_between_two_daemons() {
    let relay = Relay::start();
    let mut alice = Daemon::new("file");
    alice.start();
    // An explicit ciphersuite is checked before anything else, even before the account
    // and the members.
    for suite in [
        "bogus",
        "0x0002",
        "MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519",
    ] {
        let r = alice.client().call(
            "conversation.create",
            json!({"members": [], "ciphersuite": suite}),
        );
        let (kind, message) = error_of(&r);
        assert_eq!(kind, "invalid_params", "{r}");
        assert!(
            message.contains("ciphersuite") && message.contains(PQ),
            "{message}"
        );
    }
    alice.account(&relay, "alice");
    let mut bob = Daemon::new("file");
    let bob_a = bob.account(&relay, "bob");

    let classic = alice.sotto_json(&["conversation", "create", &bob_a]);
    assert_eq!(classic["ciphersuite"], CLASSIC, "{classic}");
    // Asking for the PQ suite never returns the classical conversation.
    let pq = alice.sotto_json(&["conversation", "create", "--ciphersuite", PQ, &bob_a]);
    assert_eq!(pq["ciphersuite"], PQ, "{pq}");
    assert_eq!(pq["state"], "active", "{pq}");
    assert_ne!(pq["id"], classic["id"]);
    // The same suite by number finds the PQ one; the default finds the classical one.
    let again = alice.sotto_json(&["conversation", "create", "--ciphersuite", "0x004f", &bob_a]);
    assert_eq!(again["id"], pq["id"]);
    let again = alice.sotto_json(&["conversation", "create", &bob_a]);
    assert_eq!(again["id"], classic["id"]);
    let out = alice.sotto(&["conversation", "create", "--ciphersuite", "rot13", &bob_a]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ciphersuite"));

    let id = pq["id"].as_str().unwrap().to_owned();
    let joined = bob.wait_conversation("the PQ Welcome", |c| c["id"] == id.as_str());
    assert_eq!(joined["ciphersuite"], PQ);
    let sent = bob.sotto_json(&["send", &id, "after the quantum computer"]);
    assert_eq!(sent["state"], "sent", "{sent}");
    let got = alice.wait_messages(&id, "bob's PQ message", |l| !l.is_empty());
    assert_eq!(got[0]["text"], "after the quantum computer");
}

#[test]
fn the_config_default_applies_and_a_member_without_the_suite_is_named() {
    let relay = Relay::start();
    // A default nobody supports stops the daemon with a clear message.
    let bad = Daemon::new("file").config("default_ciphersuite = \"MLS_999\"\n");
    let out = bad.command().output().expect("run sottod");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("default_ciphersuite") && stderr.contains(PQ),
        "{stderr}"
    );

    let mut alice = Daemon::new("file").config(&format!("default_ciphersuite = \"{PQ}\"\n"));
    alice.account(&relay, "alice");
    // An old client: key packages for 0x0001 only.
    let old = Member::new(&format!("old@{}", relay.host));
    crate::support::relay_client::block_on(async {
        let mut c = Conn::register(&relay.host, &old).await;
        let r = c
            .request(Request::PublishKeyPackages {
                ciphersuite: 1,
                key_packages: vec![
                    old.key_package(Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519),
                ],
                last_resort: None,
            })
            .await;
        assert!(matches!(r, Ok(Response::KeyPackageCount(_))), "{r:?}");
    });
    let out = alice.sotto(&["conversation", "create", "--name", "mixed", &old.address]);
    assert!(
        !out.status.success(),
        "the default (PQ) suite cannot include old"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&old.address) && stderr.contains(PQ),
        "the error names the member and the suite: {stderr}"
    );
    // Explicitly classical, the same member can be added.
    let ok = alice.sotto_json(&[
        "conversation",
        "create",
        "--name",
        "classic",
        "--ciphersuite",
        "1",
        &old.address,
    ]);
    assert_eq!(ok["state"], "active", "{ok}");
    assert_eq!(ok["ciphersuite"], CLASSIC);
}

/// Waits up to `secs` for `f`.
fn wait_long<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 100 members in the PQ suite on a relay with default limits: the daemon claims 99 PQ key
/// packages, commits, posts the Welcome; a member joins from it and decrypts a message.
/// The Welcome and commit sizes are printed (see docs/performance.md) and must fit the
/// relay's default limits.
#[test]
fn a_hundred_member_post_quantum_group_is_created_and_joined() {
    const N: usize = 99;
    let relay = Relay::start();
    let mut alice = Daemon::new("file");
    alice.account(&relay, "alice");
    let members: Vec<Member> = (0..N)
        .map(|i| Member::new(&format!("m{i}@{}", relay.host)))
        .collect();
    crate::support::relay_client::block_on(async {
        for m in &members {
            let mut c = Conn::register(&relay.host, m).await;
            let r = c
                .request(Request::PublishKeyPackages {
                    ciphersuite: u16::from(PQ_SUITE),
                    key_packages: vec![m.key_package(PQ_SUITE)],
                    last_resort: None,
                })
                .await;
            assert!(matches!(r, Ok(Response::KeyPackageCount(_))), "{r:?}");
        }
    });
    let addresses: Vec<&str> = members.iter().map(|m| m.address.as_str()).collect();
    let start = Instant::now();
    let created = alice.client().ok(
        "conversation.create",
        json!({"members": addresses, "name": "hundred", "ciphersuite": PQ}),
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let done = wait_long("the 100-member group to be created", 600, || {
        let c = alice
            .client()
            .ok("conversation.get", json!({"conversation": id}));
        assert_ne!(c["state"], "broken", "{c}\n{}", alice.log_text());
        (c["pending"].as_array()?.is_empty() && c["state"] == "active").then_some(c)
    });
    let created_in = start.elapsed();
    assert_eq!(done["members"].as_array().unwrap().len(), N + 1);
    assert_eq!(done["ciphersuite"], PQ);

    let sent = alice.client().ok(
        "message.send",
        json!({"conversation": id, "text": "hello, hundred"}),
    );
    let sent_state = sent["state"].as_str().unwrap_or_default().to_owned();
    assert!(matches!(sent_state.as_str(), "queued" | "sent"), "{sent}");
    alice.wait_messages(&id, "the message to be sent", |l| {
        l.iter().any(|m| m["state"] == "sent")
    });

    // The last member joins from its Welcome and reads the message.
    let joiner = members.last().unwrap();
    let (welcome_bytes, text, group_size) = crate::support::relay_client::block_on(async {
        let mut c = Conn::register(&relay.host, joiner).await;
        let (env, mut group) = c.join_from_welcome(joiner).await;
        assert_eq!(group.ciphersuite(), PQ_SUITE);
        let r = c
            .request(Request::ReadGroup {
                group_id: env.group_id.clone(),
                after: env.join_seq - 1,
                limit: 16,
            })
            .await;
        let Ok(Response::GroupEntries { entries, .. }) = r else {
            panic!("read the group log: {r:?}")
        };
        let mut text = None;
        for e in entries {
            let msg = MlsMessageIn::tls_deserialize_exact(&e.message).expect("mls message");
            let protocol = msg.try_into_protocol_message().expect("a protocol message");
            let processed = group
                .process_message(&joiner.provider, protocol)
                .expect("process");
            if let ProcessedMessageContent::ApplicationMessage(app) = processed.into_content() {
                let env = sotto_protocol::envelope::Envelope::open(&app.into_bytes())
                    .expect("a Sotto envelope");
                text = Some(env.body);
            }
        }
        (env.welcome.len(), text, group.members().count())
    });
    assert_eq!(text.as_deref(), Some("hello, hundred"));
    assert_eq!(group_size, N + 1);

    // The commit the daemon posted, as the relay stored it.
    let db = rusqlite::Connection::open(relay.dir.path().join("data/relay.sqlite3")).unwrap();
    let commit_bytes: i64 = db
        .query_row(
            "SELECT max(length(message)) FROM group_log WHERE content_type = ?1",
            [i64::from(sotto_protocol::relay::content_type::COMMIT)],
            |r| r.get(0),
        )
        .unwrap();
    eprintln!(
        "100-member PQ group: created in {created_in:?}; Welcome {welcome_bytes} bytes, commit {commit_bytes} bytes"
    );
    // The relay's default max_mailbox_payload and max_group_message (2 MiB) leave room for
    // groups several times this size; the old 512 KiB would have stopped at ~190 members.
    let limit = 2 * 1024 * 1024;
    assert!(welcome_bytes < limit / 4 && (commit_bytes as usize) < limit / 4);
}
