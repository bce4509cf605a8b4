//! Relay scale-out with real daemons (issue 13): two `sotto-relay` processes on one
//! PostgreSQL database behind one address (a round-robin TCP proxy in the test, as a load
//! balancer), three real daemons in one group whose connections land on different
//! processes. Messages cross processes; then one relay process is killed with SIGKILL under
//! load from two senders: the daemons on it reconnect through the proxy to the other, and
//! every acknowledged message reaches every member exactly once, in one order.

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::proxy::Proxy;
use crate::support::{Daemon, RawClient, Relay, wait_for};

/// Messages each sender sends.
const PER_SENDER: usize = 40;
/// The relay process dies after this many of each sender's messages were acknowledged.
const KILL_AFTER: usize = 12;

/// `sotto_relay_connections` of a relay process (its open WebSocket connections).
fn relay_connections(host: &str) -> u64 {
    let mut s = std::net::TcpStream::connect(host).expect("connect for /metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix("sotto_relay_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sotto_relay_connections in:\n{out}"))
}

fn connected(d: &Daemon) -> bool {
    RawClient::connect(&d.socket())
        .ok()
        .map(|mut c| c.call("daemon.status", json!({})))
        .and_then(|r| {
            r["result"]["relays"]
                .as_array()
                .map(|rs| !rs.is_empty() && rs.iter().all(|r| r["connected"] == true))
        })
        .unwrap_or(false)
}

/// `message.list` until `pred`, with a deadline fit for hundreds of messages through debug
/// builds on a shared machine.
fn history(d: &Daemon, conv: &str, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let list = RawClient::connect(&d.socket()).ok().and_then(|mut c| {
            let r = c.call("message.list", json!({"conversation": conv, "limit": 1000}));
            r.get("result")?.as_array().cloned()
        });
        if let Some(list) = &list
            && pred(list)
        {
            return list.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "timed out waiting for {what}; last: {}",
            list.map(|l| l.len()).unwrap_or(0)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

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
    let cluster = crate::pg::shared();
    let url = cluster.create_database();
    // The proxy's address is the relays' one public URL: every process accepts proofs
    // bound to it, so a daemon may land on either.
    let proxy = Proxy::bind();
    let public = format!("ws://{}/sotto/v1", proxy.host);
    let flags = ["--database", url.as_str(), "--public-url", public.as_str()];
    let mut r1 = Relay::start_with(&flags);
    let r2 = Relay::start_with(&flags);
    proxy.set_backends(&[&r1.host, &r2.host]);

    // alice and carol on process 1, bob on process 2.
    let mut people = Vec::new();
    for (name, process) in [("alice", 0), ("bob", 1), ("carol", 0)] {
        proxy.route_to(process);
        let mut d = Daemon::new("file");
        d.start();
        let a = d
            .client()
            .ok("account.create", json!({"name": name, "relay": proxy.host}));
        let address = a["address"].as_str().expect("address").to_owned();
        wait_for(&format!("{name} connected"), || connected(&d).then_some(()));
        people.push((d, address));
    }
    assert!(
        proxy.live(0) >= 1 && proxy.live(1) >= 1,
        "connections on both processes: {} and {}",
        proxy.live(0),
        proxy.live(1)
    );
    assert!(relay_connections(&r1.host) >= 1 && relay_connections(&r2.host) >= 1);

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
        history(d, &conv, "the message across processes", |l| {
            l.iter().any(|m| m["text"] == "across")
        });
    }

    // Load from two senders on different processes; process 1 dies in the middle.
    let acked: Vec<_> = (0..2)
        .map(|_| std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)))
        .collect();
    // From here on new connections try process 2 first too (process 1 is about to die).
    proxy.route_to(1);
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
    r1.kill();
    for s in senders {
        s.join().expect("sender");
    }
    wait_for("every daemon back on the surviving process", || {
        (proxy.live(0) == 0 && people.iter().all(|(d, _)| connected(d))).then_some(())
    });

    // Every acknowledged message, exactly once, in one order, everywhere.
    let expected: Vec<String> = std::iter::once("across".to_owned())
        .chain((0..PER_SENDER).flat_map(|i| [format!("alice {i}"), format!("bob {i}")]))
        .collect();
    let total = expected.len();
    let histories: Vec<Vec<Value>> = people
        .iter()
        .map(|(d, me)| {
            history(d, &conv, &format!("{total} messages at {me}"), |l| {
                l.len() >= total && l.iter().all(|m| m["state"] != "queued")
            })
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
        proxy.total(1) > 1,
        "the daemons of the killed process reconnected to the other"
    );
    for (d, _) in &mut people {
        d.stop();
    }
}
