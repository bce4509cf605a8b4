//! Hostile input at the daemon: a member of the group posts garbage and replayed
//! ciphertext into the group log (the relay accepts both: their MLS framing is fine), and
//! an outsider posts junk and a forged Welcome into a mailbox. Each daemon rejects every
//! such entry with one log line and the conversation keeps working. (The relay-level
//! checks are in relay/tests/cases/hostile.rs.)

use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use serde_json::{Value, json};
use sotto_protocol::envelope::Envelope;
use sotto_protocol::relay::{
    DeviceRef, MailboxPayload, Request, Response, WelcomeEnvelope, content_type,
};

use crate::support::relay_client::{Conn, Member, block_on};
use crate::support::{Daemon, Relay};

const SUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

fn texts(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

/// Lines of `log` that report a rejected group-log entry.
fn rejected_entries(log: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("an entry could not be processed; skipped")
                || l.contains("undecodable entry skipped")
                || l.contains("an unreadable envelope was skipped")
        })
        .count()
}

fn post_id() -> [u8; 16] {
    rand::random()
}

#[test]
fn garbage_and_replays_from_a_member_are_rejected_and_the_group_goes_on() {
    let relay = Relay::start();
    let mut alice = Daemon::new("file");
    let _a = alice.account(&relay, "alice");
    let mut bob = Daemon::new("file");
    let b = bob.account(&relay, "bob");
    let mallory = Member::new(&format!("mallory@{}", relay.host));
    block_on(async {
        let mut c = Conn::register(&relay.host, &mallory).await;
        let r = c
            .request(Request::PublishKeyPackages {
                ciphersuite: u16::from(SUITE),
                key_packages: vec![mallory.key_package(SUITE)],
                last_resort: None,
            })
            .await;
        assert!(matches!(r, Ok(Response::KeyPackageCount(_))), "{r:?}");
    });
    let created = alice.sotto_json(&[
        "conversation",
        "create",
        "--name",
        "hostile",
        "--ciphersuite",
        "1",
        &b,
        &mallory.address,
    ]);
    assert_eq!(created["state"], "active", "{created}");
    let conv = created["id"].as_str().unwrap().to_owned();
    bob.wait_conversation("the Welcome at bob", |c| c["id"] == conv.as_str());

    // Mallory joins from its Welcome, sends one real message, then replays it and posts
    // a tampered copy: same group, epoch and content type, so the relay stores them.
    block_on(async {
        let mut c = Conn::register(&relay.host, &mallory).await;
        let (env, mut group) = c.join_from_welcome(&mallory).await;
        let sealed = Envelope {
            id: rand::random(),
            kind: "text".into(),
            body: "hello from mallory".into(),
            sent_at: 1_700_000_000,
            reply_to: None,
        }
        .seal()
        .unwrap();
        let real = group
            .create_message(&mallory.provider, &mallory.signer, &sealed)
            .expect("encrypt")
            .tls_serialize_detached()
            .unwrap();
        let tamper = |bytes: &[u8]| {
            let mut t = bytes.to_vec();
            let n = t.len();
            for b in &mut t[n - 48..] {
                *b ^= 0xa5;
            }
            t
        };
        let tampered = tamper(&real);
        // A tampered copy of the next message, posted before the message itself: its
        // failed decryption must not use up the key the real one needs.
        let sealed2 = Envelope {
            id: rand::random(),
            kind: "text".into(),
            body: "second from mallory".into(),
            sent_at: 1_700_000_001,
            reply_to: None,
        }
        .seal()
        .unwrap();
        let second = group
            .create_message(&mallory.provider, &mallory.signer, &sealed2)
            .expect("encrypt")
            .tls_serialize_detached()
            .unwrap();
        let second_tampered = tamper(&second);
        for (what, bytes) in [
            ("the real message", &real),
            ("a replay", &real),
            ("a tampered copy", &tampered),
            ("a tampered copy of the next message", &second_tampered),
            ("the next message", &second),
        ] {
            let r = c
                .request(Request::PostGroup {
                    post_id: post_id(),
                    group_id: env.group_id.clone(),
                    message: bytes.clone(),
                    added: vec![],
                    removed: vec![],
                })
                .await;
            assert!(
                matches!(r, Ok(Response::Accepted { .. })),
                "the relay stores {what} (its framing is valid): {r:?}"
            );
        }
        // Nothing but the framing is checked at the relay: the entries are application
        // messages in the current epoch.
        let r = c
            .request(Request::ReadGroup {
                group_id: env.group_id.clone(),
                after: 0,
                limit: 100,
            })
            .await;
        let Ok(Response::GroupEntries { entries, .. }) = r else {
            panic!("{r:?}")
        };
        let apps = entries
            .iter()
            .filter(|e| e.content_type == content_type::APPLICATION)
            .count();
        assert_eq!(apps, 5);
    });

    // Bob and alice show mallory's message once, and go on talking.
    for d in [&alice, &bob] {
        d.wait_messages(&conv, "mallory's messages", |l| {
            texts(l).contains(&"hello from mallory".to_owned())
                && texts(l).contains(&"second from mallory".to_owned())
        });
    }
    bob.client().ok(
        "message.send",
        json!({"conversation": conv, "text": "bob after the garbage"}),
    );
    alice.sotto_ok(&["send", "hostile", "alice after the garbage"]);
    let expected = [
        "hello from mallory",
        "second from mallory",
        "bob after the garbage",
        "alice after the garbage",
    ];
    for d in [&alice, &bob] {
        let got = d.wait_messages(&conv, "both messages after the garbage", |l| l.len() >= 4);
        let mut got = texts(&got);
        // The two later ones may be ordered either way by the relay.
        got[2..].sort();
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want[2..].sort();
        assert_eq!(
            got, want,
            "mallory's message once, nothing from the replay or the garbage"
        );
        let c = d
            .client()
            .ok("conversation.get", json!({"conversation": conv}));
        assert_eq!(c["state"], "active", "{c}");
        assert_eq!(
            rejected_entries(&d.log_text()),
            3,
            "one log line for each rejected entry:\n{}",
            d.log_text()
        );
    }
}

#[test]
fn junk_and_a_forged_welcome_from_an_outsider_are_dropped_and_the_mailbox_goes_on() {
    let relay = Relay::start();
    let mut alice = Daemon::new("file");
    let a = alice.account(&relay, "alice");
    let device_id = alice.client().ok("account.info", json!({}))["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut bob = Daemon::new("file");
    let b = bob.account(&relay, "bob");
    let eve = Member::new(&format!("eve@{}", relay.host));
    let to_alice = DeviceRef {
        address: a.clone(),
        device_id,
    };
    block_on(async {
        let mut c = Conn::register(&relay.host, &eve).await;
        let forged = MailboxPayload::Welcome(WelcomeEnvelope {
            relay_url: relay.url.clone(),
            group_id: vec![7; 16],
            join_seq: 1,
            welcome: vec![0x00, 0x01, 0x00, 0x03, 0xde, 0xad, 0xbe, 0xef],
        });
        for payload in [
            b"not a sotto payload at all".to_vec(),
            sotto_protocol::wire::encode(&forged),
        ] {
            let r = c
                .request(Request::PostMailbox {
                    post_id: post_id(),
                    recipients: vec![to_alice.clone()],
                    payload,
                })
                .await;
            assert!(matches!(r, Ok(Response::Posted { .. })), "{r:?}");
        }
    });
    // A real Welcome after the junk: alice's mailbox follower went on.
    let conv = bob.sotto_json(&["conversation", "create", "--name", "after eve", &a])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.wait_conversation("the real Welcome after the junk", |c| {
        c["id"] == conv.as_str()
    });
    let all = alice.client().ok("conversation.list", json!({}));
    assert_eq!(
        all.as_array().unwrap().len(),
        1,
        "nothing joined from the junk: {all}"
    );
    bob.client().ok(
        "message.send",
        json!({"conversation": conv, "text": "hi alice"}),
    );
    alice.wait_messages(&conv, "bob's message", |l| l.len() == 1);
    let log = alice.log_text();
    let skipped = log
        .lines()
        .filter(|l| l.contains("mailbox entry skipped"))
        .count();
    assert_eq!(skipped, 2, "one line per dropped entry:\n{log}");
    let _ = b;
}

/// A seeded run of random mutations of a member's real ciphertext (bytes flipped, spliced
/// or appended past the MLS header, so the relay still takes them as application messages
/// of the current epoch) and of Welcome envelopes posted to a mailbox. The daemon rejects
/// each, stays up, and the conversation and the mailbox keep working. `SOTTO_FAULT_SEED`
/// replays a run; the seed is printed.
#[test]
fn seeded_mutations_of_real_ciphertext_and_welcomes_are_rejected() {
    use rand::{Rng as _, SeedableRng as _};
    let seed: u64 = std::env::var("SOTTO_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("SOTTO_FAULT_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    const MUTATIONS: usize = 40;

    let relay = Relay::start();
    let mut alice = Daemon::new("file");
    let a = alice.account(&relay, "alice");
    let device_id = alice.client().ok("account.info", json!({}))["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mallory = Member::new(&format!("mallory@{}", relay.host));
    block_on(async {
        let mut c = Conn::register(&relay.host, &mallory).await;
        let r = c
            .request(Request::PublishKeyPackages {
                ciphersuite: u16::from(SUITE),
                key_packages: vec![mallory.key_package(SUITE)],
                last_resort: None,
            })
            .await;
        assert!(matches!(r, Ok(Response::KeyPackageCount(_))), "{r:?}");
    });
    let created = alice.sotto_json(&[
        "conversation",
        "create",
        "--name",
        "mutations",
        "--ciphersuite",
        "1",
        &mallory.address,
    ]);
    let conv = created["id"].as_str().unwrap().to_owned();
    let to_alice = DeviceRef {
        address: a.clone(),
        device_id,
    };
    let (accepted, mailbox_posts) = block_on(async {
        let mut c = Conn::register(&relay.host, &mallory).await;
        let (env, mut group) = c.join_from_welcome(&mallory).await;
        let mut accepted = 0;
        for i in 0..MUTATIONS {
            let sealed = Envelope {
                id: rand::random(),
                kind: "text".into(),
                body: format!("mutated {i}"),
                sent_at: 1_700_000_000,
                reply_to: None,
            }
            .seal()
            .unwrap();
            let mut bytes = group
                .create_message(&mallory.provider, &mallory.signer, &sealed)
                .expect("encrypt")
                .tls_serialize_detached()
                .unwrap();
            let n = bytes.len();
            let from = n * 2 / 5;
            match rng.gen_range(0..3) {
                0 => {
                    for _ in 0..rng.gen_range(1..=4) {
                        let at = rng.gen_range(from..n);
                        bytes[at] ^= rng.gen_range(1..=255u8);
                    }
                }
                1 => {
                    let at = rng.gen_range(from..n);
                    let len = rng.gen_range(1..=(n - at).min(32));
                    rng.fill(&mut bytes[at..at + len]);
                }
                _ => {
                    let at = rng.gen_range(from..n - 16);
                    bytes[at..].reverse();
                }
            }
            let r = c
                .request(Request::PostGroup {
                    post_id: post_id(),
                    group_id: env.group_id.clone(),
                    message: bytes,
                    added: vec![],
                    removed: vec![],
                })
                .await;
            match r {
                Ok(Response::Accepted { epoch, .. }) => {
                    assert_eq!(epoch, 1, "stays an application message of epoch 1");
                    accepted += 1;
                }
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => {} // the relay refused the framing: fine, it never reaches alice
            }
        }
        // Mutated Welcomes in envelopes for alice's mailbox.
        let mut mailbox_posts = 0;
        for _ in 0..10 {
            let mut welcome = env.welcome.clone();
            let n = welcome.len();
            for _ in 0..rng.gen_range(1..=8) {
                let at = rng.gen_range(0..n);
                welcome[at] ^= rng.gen_range(1..=255u8);
            }
            if rng.gen_bool(0.3) {
                welcome.truncate(rng.gen_range(0..n));
            }
            let payload = sotto_protocol::wire::encode(&MailboxPayload::Welcome(WelcomeEnvelope {
                relay_url: env.relay_url.clone(),
                group_id: rand::random::<[u8; 16]>().to_vec(),
                join_seq: rng.gen_range(0..1000),
                welcome,
            }));
            let r = c
                .request(Request::PostMailbox {
                    post_id: post_id(),
                    recipients: vec![to_alice.clone()],
                    payload,
                })
                .await;
            assert!(matches!(r, Ok(Response::Posted { .. })), "{r:?}");
            mailbox_posts += 1;
        }
        // And one real message after all of it.
        let sealed = Envelope {
            id: rand::random(),
            kind: "text".into(),
            body: "real after the mutations".into(),
            sent_at: 1_700_000_000,
            reply_to: None,
        }
        .seal()
        .unwrap();
        let real = group
            .create_message(&mallory.provider, &mallory.signer, &sealed)
            .expect("encrypt")
            .tls_serialize_detached()
            .unwrap();
        let r = c
            .request(Request::PostGroup {
                post_id: post_id(),
                group_id: env.group_id.clone(),
                message: real,
                added: vec![],
                removed: vec![],
            })
            .await;
        assert!(matches!(r, Ok(Response::Accepted { .. })), "{r:?}");
        (accepted, mailbox_posts)
    });
    eprintln!("{accepted} of {MUTATIONS} mutated messages reached the log");
    let got = alice.wait_messages(&conv, "the real message after the mutations", |l| {
        texts(l).contains(&"real after the mutations".to_owned())
    });
    assert_eq!(
        texts(&got),
        ["real after the mutations"],
        "no mutated message was shown (seed {seed})"
    );
    alice.sotto_ok(&["send", "mutations", "alice still sends"]);
    alice.wait_messages(&conv, "alice's own message sent", |l| {
        l.iter()
            .any(|m| m["text"] == "alice still sends" && m["state"] == "sent")
    });
    let c = alice
        .client()
        .ok("conversation.get", json!({"conversation": conv}));
    assert_eq!(c["state"], "active", "seed {seed}: {c}");
    let log = alice.log_text();
    assert_eq!(
        rejected_entries(&log),
        accepted,
        "one line per rejected entry (seed {seed})"
    );
    crate::support::wait_for("every mutated Welcome to be dropped", || {
        let log = alice.log_text();
        (log.lines()
            .filter(|l| l.contains("mailbox entry skipped"))
            .count()
            == mailbox_posts)
            .then_some(())
    });
    let all = alice.client().ok("conversation.list", json!({}));
    assert_eq!(all.as_array().unwrap().len(), 1, "seed {seed}: {all}");
    assert!(alice.is_running());
}
