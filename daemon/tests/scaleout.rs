//! Relay scale-out with real daemons (issue 13): two `sotto-relay` processes on one
//! PostgreSQL database behind one address (a round-robin TCP proxy in the test, as a load
//! balancer), three real daemons in one group whose connections land on different
//! processes. Messages cross processes; then one relay process is killed with SIGKILL under
//! load from two senders: the daemons on it reconnect through the proxy to the other, and
//! every acknowledged message reaches every member exactly once, in one order.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::proxied::ProxiedRelays;
use crate::support::{Daemon, RawClient, wait_for};

/// Messages each sender sends.
const PER_SENDER: usize = 40;
/// The relay process dies after this many of each sender's messages were acknowledged.
const KILL_AFTER: usize = 12;
/// How long hundreds of messages may take through debug builds on a shared machine.
const HISTORY_DEADLINE: Duration = Duration::from_secs(180);

/// Sends `texts` in order, each under its own idempotency key, retrying a call whose
/// answer is an error with the same key; counts acknowledgements in `acked`.
fn sender(
    socket: std::path::PathBuf,
    conv: String,
    who: &'static str,
    acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for i in 0..PER_SENDER {
            let text = format!("{who} {i}");
            let key = format!("{who}-{i}");
            let mut attempts = 0;
            loop {
                attempts += 1;
                let r = RawClient::connect(&socket).map(|mut c| {
                    c.call(
                        "message.send",
                        json!({"conversation": conv, "text": text, "idempotency_key": key}),
                    )
                });
                match r {
                    Ok(r) if r.get("result").is_some() => break,
                    other => {
                        assert!(attempts < 20, "{text}: {other:?}");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
            acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

#[test]
fn daemons_on_two_relay_processes_share_a_group_and_survive_a_kill_9_of_one() {
    let url = crate::pg::shared()
        .create_database()
        .expect("create a database");
    let mut net = ProxiedRelays::start(2, &["--database", &url]);

    // alice and carol on process 1, bob on process 2.
    let mut people: Vec<(Daemon, String)> = [("alice", 0), ("bob", 1), ("carol", 0)]
        .into_iter()
        .map(|(name, process)| net.daemon(name, process))
        .collect();
    let proxy = &net.proxy;
    assert!(
        proxy.live(0) >= 1 && proxy.live(1) >= 1,
        "connections on both processes: {} and {}",
        proxy.live(0),
        proxy.live(1)
    );
    for r in &net.relays {
        assert!(r.metric("sotto_relay_connections") >= 1.0);
    }

    let conv = people[0].0.client().ok(
        "conversation.create",
        json!({"members": [people[1].1, people[2].1], "name": "split"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (d, _) in &people[1..] {
        d.wait_conversation("the Welcome", |c| {
            c["id"] == conv.as_str() && c["state"] == "active"
        });
    }
    // Across processes: bob (process 2) to alice and carol (process 1).
    people[1].0.client().ok(
        "message.send",
        json!({"conversation": conv, "text": "across", "idempotency_key": "across"}),
    );
    for (d, _) in &people {
        d.wait_messages_within(
            HISTORY_DEADLINE,
            &conv,
            "the message across processes",
            |l| l.iter().any(|m| m["text"] == "across"),
        );
    }

    // Load from two senders on different processes; process 1 dies in the middle.
    let acked: Vec<_> = (0..2)
        .map(|_| std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)))
        .collect();
    // From here on new connections try process 2 first too (process 1 is about to die).
    net.proxy.route_to(1);
    let senders = [
        sender(
            people[0].0.socket(),
            conv.clone(),
            "alice",
            acked[0].clone(),
        ),
        sender(people[1].0.socket(), conv.clone(), "bob", acked[1].clone()),
    ];
    wait_for("acknowledged sends before the kill", || {
        acked
            .iter()
            .all(|a| a.load(std::sync::atomic::Ordering::SeqCst) >= KILL_AFTER)
            .then_some(())
    });
    net.relays[0].kill();
    for s in senders {
        s.join().expect("sender");
    }
    wait_for("every daemon back on the surviving process", || {
        (net.proxy.live(0) == 0 && people.iter().all(|(d, _)| d.relays_connected())).then_some(())
    });

    // Every acknowledged message, exactly once, in one order, everywhere.
    let expected: Vec<String> = std::iter::once("across".to_owned())
        .chain((0..PER_SENDER).flat_map(|i| [format!("alice {i}"), format!("bob {i}")]))
        .collect();
    let total = expected.len();
    let histories: Vec<Vec<Value>> = people
        .iter()
        .map(|(d, me)| {
            d.wait_messages_within(
                HISTORY_DEADLINE,
                &conv,
                &format!("{total} messages at {me}"),
                |l| l.len() >= total && l.iter().all(|m| m["state"] != "queued"),
            )
        })
        .collect();
    let ids = |h: &[Value]| -> Vec<String> {
        h.iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    for h in &histories {
        assert_eq!(h.len(), total, "nothing doubled");
        let mut texts: Vec<String> = h
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect();
        // Each sender's own messages in the order sent.
        for who in ["alice", "bob"] {
            let mine: Vec<&String> = texts.iter().filter(|t| t.starts_with(who)).collect();
            let want: Vec<String> = (0..PER_SENDER).map(|i| format!("{who} {i}")).collect();
            assert_eq!(mine, want.iter().collect::<Vec<_>>(), "{who}'s order");
        }
        texts.sort();
        let mut want = expected.clone();
        want.sort();
        assert_eq!(texts, want, "every message exactly once");
        assert!(
            h.iter()
                .all(|m| m["state"] == "sent" || m["state"] == "received"),
            "no failed message: {h:?}"
        );
        let positions: Vec<u64> = h.iter().map(|m| m["position"].as_u64().unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        assert_eq!(ids(h), ids(&histories[0]), "one order for everyone");
    }
    assert!(
        net.proxy.total(1) > 1,
        "the daemons of the killed process reconnected to the other"
    );
    for (d, _) in &mut people {
        d.stop();
    }
}
