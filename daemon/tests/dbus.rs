//! `org.sotto.Sotto1` on a private session bus: the real `sottod`, called with the real
//! `busctl`, `gdbus`, `dbus-send` and watched with `dbus-monitor`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::support::{Daemon, RawClient, Relay, SessionBus, bin, busctl_plain, wait_for};

const NAME: &str = "org.sotto.Sotto1";
const PATH: &str = "/org/sotto/Sotto1";

/// A daemon on `bus`, once it owns the name.
fn daemon_on(bus: &SessionBus) -> Daemon {
    let mut d = Daemon::new("file").with_bus(&bus.address);
    d.start();
    wait_for("sottod to own org.sotto.Sotto1", || {
        bus.has_owner(NAME).then_some(())
    });
    d
}

/// `busctl --user --json=short call … METHOD SIG ARGS…`: the first reply argument as plain
/// JSON, or stderr.
fn busctl(bus: &SessionBus, method: &str, args: &[&str]) -> Result<Value, String> {
    let mut all = vec![
        "--user",
        "--json=short",
        "--timeout=20",
        "call",
        NAME,
        PATH,
        NAME,
        method,
    ];
    all.extend_from_slice(args);
    let out = bus.run("busctl", &all);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let reply: Value = serde_json::from_slice(&out.stdout).expect("busctl json");
    Ok(busctl_plain(
        reply["type"].as_str().expect("type"),
        &reply["data"][0],
    ))
}

/// `gdbus call --session … --method org.sotto.Sotto1.METHOD ARGS…`: stdout or stderr.
fn gdbus(bus: &SessionBus, method: &str, args: &[&str]) -> Result<String, String> {
    let method = format!("{NAME}.{method}");
    let mut all = vec![
        "call",
        "--session",
        "--timeout",
        "20",
        "--dest",
        NAME,
        "--object-path",
        PATH,
        "--method",
        &method,
    ];
    all.extend_from_slice(args);
    let out = bus.run("gdbus", &all);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The JSON-RPC result without its null fields (D-Bus omits them) and without `uptime_s`.
fn comparable(mut v: Value) -> Value {
    match &mut v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.remove("uptime_s");
            for v in m.values_mut() {
                *v = comparable(v.take());
            }
        }
        Value::Array(a) => {
            for v in a.iter_mut() {
                *v = comparable(v.take());
            }
        }
        _ => {}
    }
    v
}

/// Creates account `alice` on `relay`.
fn create_account(d: &Daemon, relay: &Relay) -> Value {
    d.client().ok(
        "account.create",
        json!({"name": "alice", "relay": relay.host}),
    )
}

/// Asserts that `method` over D-Bus (busctl `args`) and `rpc_method` over the socket agree.
/// The state may move between the two calls (a relay connects, a change completes), so they
/// are retried until a pair matches.
fn assert_same(bus: &SessionBus, d: &Daemon, method: &str, args: &[&str], rpc: (&str, Value)) {
    let mut last = None;
    let start = std::time::Instant::now();
    while start.elapsed() < crate::support::DEADLINE {
        let via_dbus = comparable(busctl(bus, method, args).unwrap());
        let via_rpc = comparable(d.client().ok(rpc.0, rpc.1.clone()));
        if via_dbus == via_rpc {
            return;
        }
        last = Some((via_dbus, via_rpc));
    }
    let (via_dbus, via_rpc) = last.unwrap();
    assert_eq!(via_dbus, via_rpc, "{method} over D-Bus vs {}", rpc.0);
}

/// [`assert_same`] for a method whose only argument is the options.
fn assert_same_as_socket(bus: &SessionBus, d: &Daemon, method: &str, rpc_method: &str) {
    assert_same(bus, d, method, &["a{sv}", "0"], (rpc_method, json!({})));
}

#[test]
fn status_and_account_info_match_the_socket() {
    let bus = SessionBus::start();
    let relay = Relay::start();
    let d = daemon_on(&bus);
    let status = busctl(&bus, "Status", &["a{sv}", "0"]).unwrap();
    assert!(status["uptime_s"].is_u64(), "{status}");
    assert_same_as_socket(&bus, &d, "Status", "daemon.status");
    let err = gdbus(&bus, "AccountInfo", &["{}"]).unwrap_err();
    assert!(err.contains("org.sotto.Sotto1.Error.NoAccount"), "{err}");

    let account = create_account(&d, &relay);
    let address = account["address"].as_str().unwrap();
    assert_same_as_socket(&bus, &d, "Status", "daemon.status");
    assert_same_as_socket(&bus, &d, "AccountInfo", "account.info");
    let info = gdbus(&bus, "AccountInfo", &["{}"]).unwrap();
    assert!(
        info.contains(&format!("'address': <'{address}'>")),
        "{info}"
    );
    assert!(info.contains(&format!(
        "'fingerprint': <'{}'>",
        account["fingerprint"].as_str().unwrap()
    )));
    let status = gdbus(&bus, "Status", &["{}"]).unwrap();
    assert!(status.contains("'protocol': <uint32 1>"), "{status}");
    assert!(status.contains("'last_event_seq': <uint64 "), "{status}");
    let prop = bus.run(
        "busctl",
        &["--user", "get-property", NAME, PATH, NAME, "Address"],
    );
    assert_eq!(
        String::from_utf8_lossy(&prop.stdout),
        format!("s \"{address}\"\n")
    );
    let prop = bus.run(
        "busctl",
        &["--user", "get-property", NAME, PATH, NAME, "Connected"],
    );
    let connected = String::from_utf8_lossy(&prop.stdout).into_owned();
    assert!(
        connected == "b true\n" || connected == "b false\n",
        "{connected}"
    );
}

#[test]
fn get_events_returns_what_a_late_client_missed() {
    let bus = SessionBus::start();
    let relay = Relay::start();
    let d = daemon_on(&bus);
    assert_eq!(
        busctl(&bus, "GetEvents", &["tu", "0", "0"]).unwrap(),
        json!([])
    );
    create_account(&d, &relay);
    // At most `limit`, and the same event a JSON-RPC client replaying from 0 gets.
    let events = busctl(&bus, "GetEvents", &["tu", "0", "1"]).unwrap();
    let mut c = d.client();
    c.ok("events.subscribe", json!({"since": 0}));
    let replayed = c.read()["params"]["result"].clone();
    assert_eq!(replayed["seq"], 1);
    assert_eq!(replayed["type"], "account.created");
    assert_eq!(events, json!([comparable(replayed)]));
    // Only events after `since`.
    let later = busctl(&bus, "GetEvents", &["tu", "1", "0"]).unwrap();
    assert!(
        later
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["seq"].as_u64() > Some(1)),
        "{later}"
    );
    let gd = gdbus(&bus, "GetEvents", &["0", "1"]).unwrap();
    assert!(gd.contains("'type': <'account.created'>"), "{gd}");
    assert!(gd.contains("'seq': <uint64 1>"), "{gd}");
}

#[test]
fn the_address_property_change_is_signalled() {
    let bus = SessionBus::start();
    let relay = Relay::start();
    let d = daemon_on(&bus);
    let monitor = bus.monitor(
        "type='signal',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged'",
    );
    let account = create_account(&d, &relay);
    let address = account["address"].as_str().unwrap();
    monitor.wait_for("PropertiesChanged with the new Address", |t| {
        t.contains("path=/org/sotto/Sotto1")
            && t.contains("string \"Address\"")
            && t.contains(&format!("string \"{address}\""))
    });
}

#[test]
fn bad_calls_get_dbus_errors_and_the_daemon_keeps_serving() {
    let bus = SessionBus::start();
    let mut d = daemon_on(&bus);
    // An unknown option key: refused like an unknown JSON-RPC param.
    let err = gdbus(&bus, "Status", &["{'colour': <'red'>}"]).unwrap_err();
    assert!(
        err.contains("org.sotto.Sotto1.Error.InvalidParams"),
        "{err}"
    );
    assert!(err.contains("colour"), "{err}");
    // A huge key: the same error, and the reply does not echo it all back.
    let huge = "x".repeat(100_000);
    let err = gdbus(&bus, "AccountInfo", &[&format!("{{'{huge}': <'v'>}}")]).unwrap_err();
    assert!(
        err.contains("org.sotto.Sotto1.Error.InvalidParams"),
        "{err}"
    );
    assert!(err.len() < 4096, "the error echoes {} bytes", err.len());
    // Wrong signatures, from clients that do not read the introspection.
    let send = |args: &[&str]| {
        let mut all = vec![
            "--session",
            "--print-reply",
            "--dest=org.sotto.Sotto1",
            PATH,
        ];
        all.extend_from_slice(args);
        let out = bus.run("dbus-send", &all);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = send(&["org.sotto.Sotto1.Status", "string:x"]);
    assert!(err.contains("Signature mismatch"), "{err}");
    let err = send(&["org.sotto.Sotto1.GetEvents", &format!("string:{huge}")]);
    assert!(err.contains("Signature mismatch"), "{err}");
    let err = send(&["org.sotto.Sotto1.NoSuchMethod"]);
    assert!(
        err.contains("org.freedesktop.DBus.Error.UnknownMethod"),
        "{err}"
    );
    let err = busctl(&bus, "Status", &["a{sv}", "1", "limit", "u", "5"]).unwrap_err();
    assert!(err.contains("limit"), "{err}");
    // Still serving on both transports.
    assert!(d.is_running());
    assert_eq!(
        busctl(&bus, "Status", &["a{sv}", "0"]).unwrap()["protocol"],
        1
    );
    assert_eq!(d.client().ok("daemon.status", json!({}))["protocol"], 1);
    d.stop();
}

#[test]
fn without_a_session_bus_the_daemon_serves_json_rpc() {
    let mut d = Daemon::new("file");
    d.start();
    assert_eq!(d.client().ok("daemon.status", json!({}))["protocol"], 1);
    let log = d.log_text();
    assert_eq!(log.matches("running without D-Bus").count(), 1, "{log}");
    d.stop();
}

#[test]
fn dbus_false_keeps_the_daemon_off_the_bus() {
    let bus = SessionBus::start();
    let mut d = Daemon::new("file")
        .with_bus(&bus.address)
        .config("dbus = false\n");
    d.start();
    assert_eq!(d.client().ok("daemon.status", json!({}))["protocol"], 1);
    assert!(!bus.has_owner(NAME));
    assert!(d.log_text().contains("D-Bus is off"), "{}", d.log_text());
    d.stop();
}

#[test]
fn a_taken_name_leaves_the_second_daemon_on_its_socket() {
    let bus = SessionBus::start();
    let relay = Relay::start();
    let first = daemon_on(&bus);
    let account = create_account(&first, &relay);
    let mut second = Daemon::new("file").with_bus(&bus.address);
    second.start();
    assert_eq!(
        second.client().ok("daemon.status", json!({}))["protocol"],
        1
    );
    let log = second.log_text();
    assert_eq!(log.matches("the D-Bus name is taken").count(), 1, "{log}");
    // The bus still reaches the first daemon.
    let info = busctl(&bus, "AccountInfo", &["a{sv}", "0"]).unwrap();
    assert_eq!(info["address"], account["address"]);
    second.stop();
}

#[test]
fn losing_the_bus_does_not_stop_the_daemon() {
    let mut bus = SessionBus::start();
    let relay = Relay::start();
    let mut d = daemon_on(&bus);
    bus.kill();
    wait_for("the lost bus to be logged", || {
        d.log_text()
            .contains("the session bus connection ended")
            .then_some(())
    });
    create_account(&d, &relay);
    let status = d.client().ok("daemon.status", json!({}));
    assert!(status["last_event_seq"].as_u64() >= Some(1), "{status}");
    assert!(d.is_running());
    d.stop();
}

/// The `<interface name="org.sotto.Sotto1">` element of an introspection document.
fn sotto_interface(xml: &str) -> String {
    let start = xml
        .find("<interface name=\"org.sotto.Sotto1\">")
        .expect("the interface element");
    let end = start + xml[start..].find("</interface>").expect("its end") + "</interface>".len();
    xml[start..end]
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn introspection_matches_the_checked_in_xml() {
    let bus = SessionBus::start();
    let _d = daemon_on(&bus);
    let out = bus.run(
        "busctl",
        &[
            "--user",
            "--json=short",
            "call",
            NAME,
            PATH,
            "org.freedesktop.DBus.Introspectable",
            "Introspect",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    let live = sotto_interface(reply["data"][0].as_str().unwrap());
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dbus-introspection.xml");
    if std::env::var_os("SOTTO_UPDATE_INTROSPECTION").is_some() {
        let doc = format!(
            "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \
             \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n\
             <!-- org.sotto.Sotto1 at /org/sotto/Sotto1 on the session bus (docs/dbus.md).\n     \
             Checked against the daemon by daemon/tests/dbus.rs; regenerate with\n     \
             SOTTO_UPDATE_INTROSPECTION=1 cargo test -p sottod --test tests introspection -->\n\
             <node name=\"/org/sotto/Sotto1\">\n  {live}\n</node>\n"
        );
        std::fs::write(&path, doc).unwrap();
    }
    let docs = std::fs::read_to_string(path.with_file_name("dbus.md")).unwrap();
    for line in live.lines() {
        if let Some(rest) = line.trim().strip_prefix('<')
            && let Some((kind, rest)) = rest.split_once(" name=\"")
            && ["method", "signal", "property"].contains(&kind)
        {
            let name = rest.split('"').next().unwrap();
            assert!(
                docs.contains(name),
                "docs/dbus.md does not describe {kind} {name}"
            );
        }
    }
    let checked_in = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        sotto_interface(&checked_in),
        live,
        "docs/dbus-introspection.xml drifted from the code: update the docs (rerun this test \
         with SOTTO_UPDATE_INTROSPECTION=1) and docs/dbus.md"
    );
}

/// One recorded `Notify` call: (app_name, summary, body).
type Note = (String, String, String);

/// A notification server recording `Notify` calls.
struct Notifications(Arc<Mutex<Vec<Note>>>);

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Notifications {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        _hints: HashMap<String, zbus::zvariant::OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut calls = self.0.lock().unwrap();
        calls.push((app_name, summary, body));
        calls.len() as u32
    }
}

/// `org.freedesktop.Notifications` on a private bus, served from its own runtime.
struct NotificationServer {
    calls: Arc<Mutex<Vec<Note>>>,
    _conn: zbus::Connection,
    _rt: tokio::runtime::Runtime,
}

impl NotificationServer {
    fn start(bus: &SessionBus) -> NotificationServer {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let conn = rt.block_on(async {
            zbus::connection::Builder::address(bus.address.as_str())
                .unwrap()
                .serve_at(
                    "/org/freedesktop/Notifications",
                    Notifications(calls.clone()),
                )
                .unwrap()
                .name("org.freedesktop.Notifications")
                .unwrap()
                .build()
                .await
                .unwrap()
        });
        NotificationServer {
            calls,
            _conn: conn,
            _rt: rt,
        }
    }

    /// Waits until `n` notifications arrived; returns them.
    fn wait(&self, n: usize) -> Vec<Note> {
        wait_for(&format!("{n} Notify calls"), || {
            let c = self.calls.lock().unwrap();
            (c.len() >= n).then(|| c.clone())
        })
    }
}

#[test]
fn the_notifier_calls_the_notification_server() {
    use sotto_protocol::Address;
    use sotto_protocol::api::{Message, MessageState};
    use sottod::dbus::Notifier;

    let bus = SessionBus::start();
    let server = NotificationServer::start(&bus);
    let message = Message {
        id: "m1".into(),
        conversation: "c1".into(),
        sender: Address::parse("bob@127.0.0.1:7777").unwrap(),
        kind: "text".into(),
        text: format!("lunch at noon? {}", "z".repeat(200)),
        reply_to: None,
        sent_at: "2026-01-01T00:00:00Z".into(),
        received_at: Some("2026-01-01T00:00:01Z".into()),
        state: MessageState::Received,
        error: None,
        position: 1,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = zbus::connection::Builder::address(bus.address.as_str())
            .unwrap()
            .build()
            .await
            .unwrap();
        Notifier::new(client.clone(), true).notify(&message);
        Notifier::new(client, false).notify(&message);
    });
    let got = server.wait(2);
    let with_preview = got
        .iter()
        .find(|c| c.2.starts_with("lunch"))
        .expect("a preview");
    assert_eq!(with_preview.0, "Sotto");
    assert_eq!(with_preview.1, "bob@127.0.0.1:7777");
    assert!(with_preview.2.chars().count() <= 100, "{}", with_preview.2);
    let without = got
        .iter()
        .find(|c| !c.2.starts_with("lunch"))
        .expect("no preview");
    assert_eq!(without.1, "bob@127.0.0.1:7777");
    assert!(!without.2.contains("lunch"), "{}", without.2);
}

/// Alice, Bob and Carol, each with a daemon on their own session bus; Bob and Carol show
/// notifications (Carol without previews).
#[test]
fn messaging_over_dbus_signals_and_notifies() {
    let relay = Relay::start();
    let buses: Vec<SessionBus> = (0..3).map(|_| SessionBus::start()).collect();
    let bob_notes = NotificationServer::start(&buses[1]);
    let carol_notes = NotificationServer::start(&buses[2]);
    let configs = [
        "",
        "notify = true\n",
        "notify = true\nnotify_preview = false\n",
    ];
    let mut people: Vec<(Daemon, String)> = ["alice", "bob", "carol"]
        .iter()
        .zip(&buses)
        .zip(configs)
        .map(|((name, bus), config)| {
            let mut d = Daemon::new("file").with_bus(&bus.address).config(config);
            let address = d.account(&relay, name);
            (d, address)
        })
        .collect();
    let (alice_bus, bob_bus) = (&buses[0], &buses[1]);
    let (bob, carol) = (people[1].1.clone(), people[2].1.clone());
    let alice_watch = alice_bus.monitor("type='signal',interface='org.sotto.Sotto1'");
    let bob_watch = bob_bus.monitor("type='signal',interface='org.sotto.Sotto1'");

    // Contacts and a group, created over D-Bus.
    let contact = busctl(
        alice_bus,
        "AddContact",
        &["sa{sv}", &bob, "1", "alias", "s", "B"],
    )
    .unwrap();
    assert_eq!(contact["alias"], "B");
    assert_same(
        alice_bus,
        &people[0].0,
        "ListContacts",
        &["a{sv}", "0"],
        ("contact.list", json!({})),
    );
    let conv = busctl(
        alice_bus,
        "CreateConversation",
        &["asa{sv}", "2", &bob, &carol, "1", "name", "s", "trio"],
    )
    .unwrap();
    assert_eq!(conv["name"], "trio");
    let id = conv["id"].as_str().unwrap().to_owned();
    // Sent right away: the outbox keeps it behind the creation.
    let sent = gdbus(alice_bus, "SendMessage", &[&id, "hello from alice", "{}"]).unwrap();
    assert!(sent.contains("'text': <'hello from alice'>"), "{sent}");
    for (d, _) in &people[1..] {
        d.wait_messages(&id, "the message", |l| l.len() == 1);
    }

    // Bob's session bus saw the message, with its seq; Alice's saw it leave and the group change.
    let text = bob_watch.wait_for("MessageReceived on Bob's bus", |t| {
        t.contains("member=MessageReceived") && t.contains("string \"hello from alice\"")
    });
    assert!(text.contains(&format!("string \"{id}\"")), "{text}");
    assert!(text.contains("string \"seq\""), "{text}");
    let text = alice_watch.wait_for("MessageStateChanged to sent on Alice's bus", |t| {
        t.contains("member=MessageStateChanged") && t.contains("string \"sent\"")
    });
    assert!(text.contains("member=ConversationChanged"), "{text}");
    let bob_signals = bob_watch.text();
    assert!(
        bob_signals.contains("member=ConversationChanged"),
        "{bob_signals}"
    );

    // The notifications: the sender as summary; a preview for Bob, none for Carol.
    let alice = people[0].1.clone();
    let notes = bob_notes.wait(1);
    assert_eq!(
        notes[0],
        ("Sotto".into(), alice.clone(), "hello from alice".into())
    );
    let notes = carol_notes.wait(1);
    assert_eq!(notes[0].1, alice);
    assert!(!notes[0].2.contains("hello"), "{notes:?}");

    // What Bob's desktop reads over D-Bus is what the socket says.
    let bob_d = &people[1].0;
    assert_same(
        bob_bus,
        bob_d,
        "ListConversations",
        &["a{sv}", "0"],
        ("conversation.list", json!({})),
    );
    assert_same(
        bob_bus,
        bob_d,
        "GetConversation",
        &["sa{sv}", "trio", "0"],
        ("conversation.get", json!({"conversation": "trio"})),
    );
    assert_same(
        bob_bus,
        bob_d,
        "ListMessages",
        &["sa{sv}", &id, "1", "limit", "u", "10"],
        ("message.list", json!({"conversation": id, "limit": 10})),
    );
    let got = busctl(bob_bus, "ListMessages", &["sa{sv}", &id, "0"]).unwrap();
    assert_eq!(got[0]["text"], "hello from alice");
    assert_eq!(got[0]["sender"], alice.as_str());
    // A late client catches up: the received message is in the event log.
    let events = busctl(bob_bus, "GetEvents", &["tu", "0", "0"]).unwrap();
    let received: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "message.received")
        .collect();
    assert_eq!(received.len(), 1, "{events}");
    assert_eq!(received[0]["message"]["text"], "hello from alice");
    let prop = bob_bus.run(
        "busctl",
        &["--user", "get-property", NAME, PATH, NAME, "Connected"],
    );
    assert_eq!(String::from_utf8_lossy(&prop.stdout), "b true\n");

    // Bad calls on a daemon with an account.
    let err = gdbus(
        alice_bus,
        "GetConversation",
        &["no-such-conversation", "{}"],
    )
    .unwrap_err();
    assert!(err.contains("org.sotto.Sotto1.Error.NotFound"), "{err}");
    let huge = "x".repeat(100_000);
    let err = gdbus(alice_bus, "SendMessage", &[&id, &huge, "{}"]).unwrap_err();
    assert!(err.contains("org.sotto.Sotto1.Error.TooLong"), "{err}");
    let err = gdbus(
        alice_bus,
        "CreateConversation",
        &["['not an address']", "{}"],
    )
    .unwrap_err();
    assert!(
        err.contains("org.sotto.Sotto1.Error.InvalidParams"),
        "{err}"
    );
    let err = gdbus(alice_bus, "ListMessages", &[&id, "{'limit': <'ten'>}"]).unwrap_err();
    assert!(
        err.contains("org.sotto.Sotto1.Error.InvalidParams"),
        "{err}"
    );
    assert_eq!(
        busctl(alice_bus, "Status", &["a{sv}", "0"]).unwrap()["protocol"],
        1
    );

    // Membership and name changes, queued over D-Bus, reach the others.
    let renamed = gdbus(alice_bus, "RenameConversation", &[&id, "quartet", "{}"]).unwrap();
    assert!(renamed.contains(&format!("'id': <'{id}'>")), "{renamed}");
    bob_d.wait_conversation("the new name", |c| c["name"] == "quartet");
    bob_watch.wait_for("ConversationChanged with the new name", |t| {
        signal_blocks(t, "ConversationChanged")
            .iter()
            .any(|b| b.contains("string \"quartet\""))
    });
    busctl(
        alice_bus,
        "RemoveMembers",
        &["sasa{sv}", &id, "1", &carol, "0"],
    )
    .unwrap();
    bob_d.wait_conversation("carol removed", |c| {
        c["id"] == id.as_str() && c["members"].as_array().is_some_and(|m| m.len() == 2)
    });
    // Leaving returns once queued (the outcome arrives as ConversationChanged).
    let leaving = busctl(bob_bus, "LeaveConversation", &["sa{sv}", &id, "0"]).unwrap();
    assert!(
        leaving["state"] == "left"
            || leaving["pending"]
                .as_array()
                .is_some_and(|p| p.iter().any(|c| c["op"] == "leave")),
        "{leaving}"
    );
    bob_d.wait_conversation("bob left", |c| {
        c["id"] == id.as_str() && c["state"] == "left"
    });
    bob_watch.wait_for("ConversationChanged for leaving", |t| {
        signal_blocks(t, "ConversationChanged")
            .iter()
            .any(|b| b.contains("string \"left\""))
    });
    people[0].0.stop();
}

/// Asks a daemon this test did not spawn (the bus did) to stop, on drop.
struct ShutdownOnDrop(std::path::PathBuf);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if let Ok(mut c) = RawClient::connect(&self.0) {
            c.call("daemon.shutdown", json!({}));
        }
    }
}

#[test]
fn the_bus_starts_sottod_on_the_first_call() {
    let d = Daemon::new("file");
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../contrib/dbus/org.sotto.Sotto1.service"),
    )
    .unwrap();
    assert!(template.contains("\nName=org.sotto.Sotto1\n"), "{template}");
    assert!(
        template.contains("\nSystemdService=sottod.service\n"),
        "{template}"
    );
    // The checked-in file with Exec pointing at the binary under test.
    let service: Vec<String> = template
        .lines()
        .map(|l| match l.starts_with("Exec=") {
            true => format!("Exec={} --foreground", bin("sottod").display()),
            false => l.to_owned(),
        })
        .collect();
    let services = d.root.path().join("services");
    std::fs::create_dir(&services).unwrap();
    std::fs::write(
        services.join("org.sotto.Sotto1.service"),
        service.join("\n") + "\n",
    )
    .unwrap();
    let bus = SessionBus::with_activation(&services, &d.env);
    assert!(!bus.has_owner(NAME));
    let _stop = ShutdownOnDrop(d.socket());
    // The first call starts the daemon, which answers it.
    let status = busctl(&bus, "Status", &["a{sv}", "0"]).unwrap();
    assert_eq!(status["protocol"], 1);
    assert!(bus.has_owner(NAME));
    // It is the same daemon as on the socket, and it leaves the bus when it stops.
    assert_eq!(d.client().ok("daemon.status", json!({}))["protocol"], 1);
    d.client().ok("daemon.shutdown", json!({}));
    wait_for("the activated daemon to leave the bus", || {
        (!bus.has_owner(NAME)).then_some(())
    });
}

/// The blocks `dbus-monitor` printed for signal `member`, in order.
fn signal_blocks(text: &str, member: &str) -> Vec<String> {
    let mut blocks: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with("signal ") || line.starts_with("method ") {
            blocks.push(String::new());
        }
        if let Some(b) = blocks.last_mut() {
            b.push_str(line);
            b.push('\n');
        }
    }
    blocks.retain(|b| b.contains(&format!("member={member}\n")));
    blocks
}

#[test]
fn relay_connection_changes_are_signalled() {
    let mut relay = Relay::start();
    let bus = SessionBus::start();
    let mut d = daemon_on(&bus);
    let watch = bus.monitor("type='signal',path='/org/sotto/Sotto1'");
    d.account(&relay, "alice");
    let url = relay.url.clone();
    let up = |t: &str| {
        signal_blocks(t, "ConnectionChanged")
            .iter()
            .filter(|b| b.contains(&format!("string \"{url}\"")) && b.contains("boolean true"))
            .count()
    };
    let text = watch.wait_for("ConnectionChanged(url, true)", |t| up(t) == 1);
    let block = &signal_blocks(&text, "ConnectionChanged")[0];
    assert!(block.contains("string \"seq\""), "{block}");
    watch.wait_for("PropertiesChanged Connected = true", |t| {
        signal_blocks(t, "PropertiesChanged")
            .iter()
            .any(|b| b.contains("string \"Connected\"") && b.contains("boolean true"))
    });
    // The relay goes away and comes back: down, then up again.
    relay.restart();
    let text = watch.wait_for("ConnectionChanged up again", |t| up(t) == 2);
    assert!(
        signal_blocks(&text, "ConnectionChanged")
            .iter()
            .any(|b| b.contains("boolean false")),
        "{text}"
    );
    assert!(
        signal_blocks(&text, "PropertiesChanged")
            .iter()
            .any(|b| b.contains("string \"Connected\"") && b.contains("boolean false")),
        "{text}"
    );
    d.stop();
}

/// A burst of messages with a one-event subscription queue: whether or not the signal pump
/// falls behind (it then resumes from its last seq), every message is signalled once, in
/// order.
#[test]
fn a_burst_is_signalled_once_in_order_with_a_tiny_queue() {
    let relay = Relay::start();
    let bus = SessionBus::start();
    let mut alice = Daemon::new("file");
    let alice_address = alice.account(&relay, "alice");
    let mut bob = Daemon::new("file")
        .with_bus(&bus.address)
        .config("subscription_queue = 1\n");
    let bob_address = bob.account(&relay, "bob");
    let watch = bus.monitor("type='signal',interface='org.sotto.Sotto1',member='MessageReceived'");
    let conv = alice.client().ok(
        "conversation.create",
        json!({"members": [bob_address], "name": "burst"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut c = alice.client();
    let texts: Vec<String> = (0..20).map(|i| format!("burst {i:02}")).collect();
    for t in &texts {
        c.ok("message.send", json!({"conversation": conv, "text": t}));
    }
    let text = watch.wait_for("20 MessageReceived signals", |t| {
        signal_blocks(t, "MessageReceived").len() >= 20
    });
    let blocks = signal_blocks(&text, "MessageReceived");
    assert_eq!(blocks.len(), 20, "{text}");
    for (block, t) in blocks.iter().zip(&texts) {
        assert!(
            block.contains(&format!("string \"{t}\"")),
            "{t} out of order:\n{text}"
        );
        assert!(
            block.contains(&format!("string \"{alice_address}\"")),
            "{block}"
        );
    }
    bob.stop();
}

/// A stopped bus backs the signal pump up until its subscription overflows; once the bus
/// runs again the pump resumes from its last seq: every message is signalled once, in order.
#[test]
fn signals_resume_after_the_subscription_overflows() {
    let relay = Relay::start();
    let bus = SessionBus::start();
    let mut alice = Daemon::new("file");
    alice.account(&relay, "alice");
    let mut bob = Daemon::new("file")
        .with_bus(&bus.address)
        .config("subscription_queue = 1\n");
    let bob_address = bob.account(&relay, "bob");
    let watch = bus.monitor("type='signal',interface='org.sotto.Sotto1',member='MessageReceived'");
    let conv = alice.client().ok(
        "conversation.create",
        json!({"members": [bob_address], "name": "big"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Bob's bus stops reading; 40 signals of ~12 KiB overflow the socket buffer.
    bus.signal("STOP");
    let mut c = alice.client();
    let texts: Vec<String> = (0..40)
        .map(|i| format!("big {i:02} {}", "x".repeat(12_000)))
        .collect();
    for t in &texts {
        c.ok("message.send", json!({"conversation": conv, "text": t}));
    }
    bob.wait_messages(&conv, "all 40 at Bob", |l| l.len() == 40);
    bus.signal("CONT");
    let text = watch.wait_for("40 MessageReceived signals", |t| {
        signal_blocks(t, "MessageReceived").len() >= 40
    });
    let blocks = signal_blocks(&text, "MessageReceived");
    assert_eq!(blocks.len(), 40);
    for (block, t) in blocks.iter().zip(&texts) {
        assert!(block.contains(&t[..6]), "{} out of order", &t[..6]);
    }
    let log = bob.log_text();
    assert!(
        log.contains("D-Bus signals fell behind; resubscribing"),
        "the pump never overflowed, so this test proved nothing:\n{log}"
    );
    bob.stop();
}

/// The read state, search, account creation and safety numbers of the desktop app, over
/// D-Bus against the socket: `CreateAccount`, `SafetyNumber`, `VerifyContact`, the new
/// conversation keys, `MarkRead` (and its `ConversationChanged`), `SearchMessages`.
#[test]
fn read_state_search_and_identity_over_dbus() {
    let relay = Relay::start();
    let bus = SessionBus::start();
    let alice = daemon_on(&bus);
    let watch = bus.monitor("type='signal',interface='org.sotto.Sotto1'");

    // CreateAccount passes `invite` through to account.create: an invite-only relay refuses
    // none or a wrong one (nothing is created), and accepts a token it issued.
    let keys = tempfile::tempdir().unwrap();
    let admin = keys.path().join("admin.key");
    let out = std::process::Command::new(bin("sotto-relay"))
        .args(["invite", "create", "--uses", "1", "--admin-key"])
        .arg(&admin)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let closed = Relay::start_with(&["--invite-only", "--admin-key", admin.to_str().unwrap()]);
    let err = gdbus(&bus, "CreateAccount", &["alice", &closed.host, "{}"]).unwrap_err();
    assert!(
        err.contains("org.sotto.Sotto1.Error.InviteRequired"),
        "{err}"
    );
    let err = gdbus(
        &bus,
        "CreateAccount",
        &["alice", &closed.host, "{'invite': <'sotto-invite1.x'>}"],
    )
    .unwrap_err();
    assert!(
        err.contains("org.sotto.Sotto1.Error.InviteInvalid"),
        "{err}"
    );
    let err = gdbus(
        &bus,
        "CreateAccount",
        &["alice", &closed.host, "{'colour': <'red'>}"],
    )
    .unwrap_err();
    assert!(
        err.contains("org.sotto.Sotto1.Error.InvalidParams"),
        "{err}"
    );
    let err = gdbus(&bus, "AccountInfo", &["{}"]).unwrap_err();
    assert!(err.contains("org.sotto.Sotto1.Error.NoAccount"), "{err}");
    let created = busctl(
        &bus,
        "CreateAccount",
        &["ssa{sv}", "alice", &closed.host, "1", "invite", "s", &token],
    )
    .unwrap();
    assert_eq!(
        created["address"],
        format!("alice@{}", closed.host).as_str()
    );
    let me = alice.client().ok("account.info", json!({}));
    assert_same_as_socket(&bus, &alice, "AccountInfo", "account.info");
    let err = gdbus(&bus, "CreateAccount", &["alice2", &relay.host, "{}"]).unwrap_err();
    assert!(
        err.contains("org.sotto.Sotto1.Error.AccountExists"),
        "{err}"
    );

    // Safety numbers: the same as the socket's; a wrong one is refused, the right one verifies.
    let mut bob = Daemon::new("file");
    let bob_address = bob.account(&relay, "bob");
    alice
        .client()
        .ok("contact.add", json!({"address": bob_address}));
    let number = busctl(&bus, "SafetyNumber", &["sa{sv}", &bob_address, "0"]).unwrap();
    let via_rpc = alice
        .client()
        .ok("contact.safety_number", json!({"address": bob_address}));
    assert_eq!(number, via_rpc);
    let digits = number["safety_number"].as_str().unwrap().to_owned();
    let wrong = digits.replacen(&digits[..1], if &digits[..1] == "0" { "1" } else { "0" }, 1);
    let err = gdbus(&bus, "VerifyContact", &[&bob_address, &wrong, "{}"]).unwrap_err();
    assert!(
        err.contains("org.sotto.Sotto1.Error.SafetyNumberMismatch"),
        "{err}"
    );
    let verified = busctl(
        &bus,
        "VerifyContact",
        &["ssa{sv}", &bob_address, &digits.replace(' ', ""), "0"],
    )
    .unwrap();
    assert_eq!(verified["verified"], true, "{verified}");

    // Bob writes; Alice's conversation shows two unread, over both transports.
    let conv = bob.sotto_json(&["conversation", "create", me["address"].as_str().unwrap()])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for t in ["hello over dbus", "lunch at noon"] {
        assert_eq!(bob.sotto_json(&["send", &conv, t])["state"], "sent");
    }
    alice.wait_messages(&conv, "both messages", |l| l.len() == 2);
    assert_same(
        &bus,
        &alice,
        "ListConversations",
        &["a{sv}", "0"],
        ("conversation.list", json!({})),
    );
    let got = gdbus(&bus, "GetConversation", &[&conv, "{}"]).unwrap();
    assert!(got.contains("'unread': <uint32 2>"), "{got}");
    assert!(got.contains("'last_message': <{"), "{got}");
    assert!(got.contains("'last_activity_at': <'"), "{got}");

    // Search, like message.search; bad queries are InvalidParams.
    let hits = busctl(&bus, "SearchMessages", &["sa{sv}", "noon", "0"]).unwrap();
    assert_eq!(hits[0]["snippet"], "lunch at [noon]", "{hits}");
    assert_eq!(hits.as_array().unwrap().len(), 1);
    assert_same(
        &bus,
        &alice,
        "SearchMessages",
        &[
            "sa{sv}",
            "over",
            "2",
            "conversation",
            "s",
            &conv,
            "limit",
            "u",
            "5",
        ],
        (
            "message.search",
            json!({"query": "over", "conversation": conv, "limit": 5}),
        ),
    );
    for q in ["", "  "] {
        let err = gdbus(&bus, "SearchMessages", &[q, "{}"]).unwrap_err();
        assert!(
            err.contains("org.sotto.Sotto1.Error.InvalidParams") && err.contains("empty"),
            "{err}"
        );
    }
    let err = gdbus(&bus, "SearchMessages", &["noon", "{'limit': <'ten'>}"]).unwrap_err();
    assert!(
        err.contains("org.sotto.Sotto1.Error.InvalidParams"),
        "{err}"
    );

    // MarkRead: the result, the signal with `unread` (u) in its extras, the socket agrees.
    let err = gdbus(
        &bus,
        "MarkRead",
        &[&conv, &format!("{{'up_to': <'{}'>}}", "0".repeat(32))],
    )
    .unwrap_err();
    assert!(err.contains("org.sotto.Sotto1.Error.NotFound"), "{err}");
    let read = gdbus(&bus, "MarkRead", &[&conv, "{}"]).unwrap();
    assert!(read.contains("'unread': <uint32 0>"), "{read}");
    let text = watch.wait_for("ConversationChanged for conversation.read", |t| {
        signal_blocks(t, "ConversationChanged")
            .iter()
            .any(|b| b.contains("string \"conversation.read\""))
    });
    let block = signal_blocks(&text, "ConversationChanged")
        .into_iter()
        .find(|b| b.contains("string \"conversation.read\""))
        .unwrap();
    assert!(block.contains(&format!("string \"{conv}\"")), "{block}");
    let lines: Vec<&str> = block.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == "string \"unread\"")
        .unwrap_or_else(|| panic!("no unread in the extras: {block}"));
    assert_eq!(
        lines[at + 1].split_whitespace().collect::<Vec<_>>(),
        ["variant", "uint32", "0"],
        "{block}"
    );
    assert_eq!(
        alice
            .client()
            .ok("conversation.get", json!({"conversation": conv}))["unread"],
        0
    );
    // The event is in the log a late client reads.
    let events = busctl(&bus, "GetEvents", &["tu", "0", "0"]).unwrap();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "conversation.read" && e["conversation"]["unread"] == 0),
        "{events}"
    );
}
