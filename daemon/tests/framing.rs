//! API.md's framing rules, one by one, with a raw socket client.

use serde_json::{Value, json};

use crate::support::{Daemon, RawClient, Relay};

fn daemon() -> Daemon {
    let mut d = Daemon::new("file");
    d.start();
    d
}

fn error_of(v: &Value) -> (i64, String) {
    let e = &v["error"];
    (
        e["code"].as_i64().expect("code"),
        e["data"]["kind"].as_str().expect("data.kind").to_owned(),
    )
}

#[test]
fn unparseable_json_gets_32700_with_null_id_and_the_connection_stays_open() {
    let d = daemon();
    let mut c = d.client();
    c.send("{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ");
    let r = c.read();
    assert_eq!(r["id"], Value::Null);
    assert_eq!(error_of(&r), (-32700, "parse_error".into()));
    // Garbage bytes, invalid UTF-8 included.
    c.send_raw(b"\xff\xfe\x00garbage\x01\n");
    assert_eq!(error_of(&c.read()), (-32700, "parse_error".into()));
    c.send("not json at all");
    assert_eq!(error_of(&c.read()), (-32700, "parse_error".into()));
    assert_eq!(c.ok("daemon.status", json!({}))["protocol"], 1);
}

#[test]
fn a_trailing_cr_is_tolerated() {
    let d = daemon();
    let mut c = d.client();
    c.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"daemon.status\"}\r\n");
    let r = c.read();
    assert_eq!(r["id"], 7);
    assert!(r["result"].is_object(), "{r}");
}

#[test]
fn notifications_are_executed_and_never_answered() {
    let relay = Relay::start();
    let mut d = daemon();
    let mut c = d.client();
    c.send(&json!({"jsonrpc":"2.0","method":"account.create","params":{"name":"nora","relay":relay.host}}).to_string());
    c.send(r#"{"jsonrpc":"2.0","method":"no.such.method"}"#);
    c.send(r#"{"jsonrpc":"2.0","method":"account.create","params":{"bad":1}}"#);
    c.send(r#"{"jsonrpc":"2.0","id":"after","method":"account.info"}"#);
    let r = c.read();
    assert_eq!(
        r["id"], "after",
        "the first line must answer the call, not a notification: {r}"
    );
    assert_eq!(
        r["result"]["address"],
        format!("nora@{}", relay.host),
        "the notification was executed first"
    );
    d.stop();
}

#[test]
fn batches_answer_in_one_array_line() {
    let d = daemon();
    let mut c = d.client();
    c.send(r#"[{"jsonrpc":"2.0","id":1,"method":"daemon.status"},{"jsonrpc":"2.0","method":"daemon.status"},{"jsonrpc":"2.0","id":"two","method":"nope"},{"jsonrpc":"2.0","id":3,"method":"account.info","params":{"x":1}}]"#);
    let r = c.read();
    let items = r.as_array().expect("an array line");
    assert_eq!(items.len(), 3, "{r}");
    let by_id = |id: Value| {
        items
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .expect("response")
    };
    assert!(by_id(json!(1))["result"]["version"].is_string());
    assert_eq!(
        error_of(&by_id(json!("two"))),
        (-32601, "method_not_found".into())
    );
    assert_eq!(
        error_of(&by_id(json!(3))),
        (-32602, "invalid_params".into())
    );
    // An empty batch is one -32600 object.
    c.send("[]");
    let r = c.read();
    assert!(r.is_object(), "{r}");
    assert_eq!(error_of(&r), (-32600, "invalid_request".into()));
    // A batch of only notifications gets no line at all.
    c.send(r#"[{"jsonrpc":"2.0","method":"daemon.status"},{"jsonrpc":"2.0","method":"daemon.status"}]"#);
    c.send(r#"{"jsonrpc":"2.0","id":"next","method":"daemon.status"}"#);
    assert_eq!(c.read()["id"], "next");
    // Non-object members of a batch are invalid requests.
    c.send(r#"[1, "x"]"#);
    let r = c.read();
    let items = r.as_array().expect("array");
    assert_eq!(items.len(), 2);
    for i in items {
        assert_eq!(error_of(i), (-32600, "invalid_request".into()));
        assert_eq!(i["id"], Value::Null);
    }
}

#[test]
fn ids_are_echoed_verbatim() {
    let d = daemon();
    let mut c = d.client();
    for id in [
        json!(0),
        json!(-5),
        json!(9007199254740993u64),
        json!(1.5),
        json!("abc"),
        json!(""),
        json!("ünïcode ✓"),
    ] {
        c.send(&json!({"jsonrpc": "2.0", "id": id, "method": "daemon.status"}).to_string());
        let r = c.read();
        assert_eq!(r["id"], id);
        assert!(r["result"].is_object());
    }
    // An id of the wrong type makes the request invalid.
    c.send(r#"{"jsonrpc":"2.0","id":{"a":1},"method":"daemon.status"}"#);
    let r = c.read();
    assert_eq!(r["id"], Value::Null);
    assert_eq!(error_of(&r), (-32600, "invalid_request".into()));
}

#[test]
fn invalid_requests_get_32600_with_their_id() {
    let d = daemon();
    let mut c = d.client();
    c.send(r#"{"jsonrpc":"1.0","id":1,"method":"daemon.status"}"#);
    let r = c.read();
    assert_eq!(
        (r["id"].clone(), error_of(&r)),
        (json!(1), (-32600, "invalid_request".into()))
    );
    c.send(r#"{"jsonrpc":"2.0","id":2}"#);
    assert_eq!(error_of(&c.read()), (-32600, "invalid_request".into()));
    c.send(r#"{"jsonrpc":"2.0","id":3,"method":5}"#);
    assert_eq!(error_of(&c.read()), (-32600, "invalid_request".into()));
    c.send("42");
    assert_eq!(error_of(&c.read()), (-32600, "invalid_request".into()));
}

#[test]
fn params_are_by_name_and_unknown_or_mistyped_params_are_refused() {
    let d = daemon();
    let mut c = d.client();
    c.send(
        r#"{"jsonrpc":"2.0","id":1,"method":"account.create","params":["alice","127.0.0.1:9"]}"#,
    );
    assert_eq!(error_of(&c.read()), (-32602, "invalid_params".into()));
    let r = c.call(
        "account.create",
        json!({"name": "alice", "relay": "127.0.0.1:9", "colour": "blue"}),
    );
    assert_eq!(error_of(&r), (-32602, "invalid_params".into()));
    assert!(
        r["error"]["message"].as_str().unwrap().contains("colour"),
        "the message names the field: {r}"
    );
    let r = c.call("daemon.status", json!({"verbose": true}));
    assert!(
        r["error"]["message"].as_str().unwrap().contains("verbose"),
        "{r}"
    );
    let r = c.call("account.create", json!({"name": 5, "relay": "127.0.0.1:9"}));
    assert_eq!(error_of(&r), (-32602, "invalid_params".into()));
    let r = c.call("account.create", json!({"name": "alice"}));
    assert!(
        r["error"]["message"].as_str().unwrap().contains("relay"),
        "missing field named: {r}"
    );
    let r = c.call("events.subscribe", json!({"since": -1}));
    assert_eq!(error_of(&r), (-32602, "invalid_params".into()));
    // Nothing above changed anything.
    assert_eq!(c.ok("daemon.status", json!({}))["account"], Value::Null);
    // Omitted and null params mean {}.
    c.send(r#"{"jsonrpc":"2.0","id":9,"method":"daemon.status","params":null}"#);
    assert!(c.read()["result"].is_object());
}

#[test]
fn unknown_methods_get_32601() {
    let d = daemon();
    let mut c = d.client();
    let r = c.call("daemon.explode", json!({}));
    assert_eq!(error_of(&r), (-32601, "method_not_found".into()));
    assert_eq!(r["error"]["data"]["method"], "daemon.explode");
}

#[test]
fn sotto_errors_use_codes_in_range_with_data_kind() {
    let relay = Relay::start();
    let d = daemon();
    let mut c = d.client();
    let r = c.call("account.info", json!({}));
    assert_eq!(error_of(&r), (-32001, "no_account".into()));
    let r = c.call(
        "account.create",
        json!({"name": "Not Valid", "relay": "127.0.0.1:9"}),
    );
    assert_eq!(error_of(&r), (-32003, "invalid_address".into()));
    let r = c.call(
        "account.create",
        json!({"name": "ok", "relay": "ws://relay.example.org"}),
    );
    assert_eq!(
        error_of(&r),
        (-32003, "invalid_address".into()),
        "plaintext to a remote host is refused"
    );
    let r = c.call(
        "account.create",
        json!({"name": "alice", "relay": "127.0.0.1:9"}),
    );
    assert_eq!(
        error_of(&r),
        (-32007, "relay".into()),
        "an unreachable relay fails the call: {r}"
    );
    assert_eq!(
        c.ok("daemon.status", json!({}))["account"],
        Value::Null,
        "and nothing was stored"
    );
    c.ok(
        "account.create",
        json!({"name": "alice", "relay": relay.host}),
    );
    let r = c.call(
        "account.create",
        json!({"name": "alice2", "relay": relay.host}),
    );
    assert_eq!(error_of(&r), (-32002, "account_exists".into()));
    assert_eq!(
        r["error"]["data"]["address"],
        format!("alice@{}", relay.host)
    );
    let mut other = Daemon::new("file");
    other.start();
    let taken = other.client().call(
        "account.create",
        json!({"name": "alice", "relay": relay.host}),
    );
    assert_eq!(
        error_of(&taken),
        (-32002, "account_exists".into()),
        "the name is taken on the relay: {taken}"
    );
    let (code, kind) = error_of(&r);
    assert!((-32099..=-32000).contains(&code), "{kind}");
}

#[test]
fn calls_on_one_connection_run_in_arrival_order() {
    let relay = Relay::start();
    let d = daemon();
    let mut c = d.client();
    // Written in one burst: the info call must see the create.
    let burst = [
        json!({"jsonrpc":"2.0","id":1,"method":"account.create","params":{"name":"ordered","relay":relay.host}}),
        json!({"jsonrpc":"2.0","id":2,"method":"account.info"}),
        json!({"jsonrpc":"2.0","id":3,"method":"daemon.status"}),
    ]
    .iter()
    .map(|v| format!("{v}\n"))
    .collect::<String>();
    c.send_raw(burst.as_bytes());
    let replies: Vec<Value> = (0..3).map(|_| c.read()).collect();
    assert_eq!(
        replies.iter().map(|r| r["id"].clone()).collect::<Vec<_>>(),
        [json!(1), json!(2), json!(3)]
    );
    assert_eq!(
        replies[1]["result"]["address"],
        format!("ordered@{}", relay.host)
    );
    assert!(replies[2]["result"]["last_event_seq"].as_u64().unwrap() >= 1);
}

#[test]
fn subscribe_replies_before_its_notifications_with_a_string_id() {
    let relay = Relay::start();
    let d = daemon();
    let mut c = d.client();
    c.ok(
        "account.create",
        json!({"name": "sub", "relay": relay.host}),
    );
    let r = c.call("events.subscribe", json!({"since": 0}));
    let sub = r["result"]
        .as_str()
        .expect("a string subscription id")
        .to_owned();
    let n = c.read();
    assert_eq!(n["method"], "event");
    assert!(n.get("id").is_none(), "a notification has no id");
    assert_eq!(n["params"]["subscription"], sub);
    assert_eq!(n["params"]["result"]["seq"], 1);
    assert_eq!(n["params"]["result"]["type"], "account.created");
    assert_eq!(
        n["params"]["result"]["account"]["address"],
        format!("sub@{}", relay.host)
    );
    // A live subscription on a second connection sees nothing old.
    let mut live = d.client();
    let live_sub = live.ok("events.subscribe", json!({}));
    assert!(live_sub.is_string());
    assert_eq!(
        live.ok("events.unsubscribe", json!({"subscription": live_sub})),
        true
    );
    assert_eq!(
        live.ok("events.unsubscribe", json!({"subscription": "sub-unknown"})),
        false
    );
    assert!(
        live.ok("daemon.status", json!({}))["version"].is_string(),
        "no stray notification arrived"
    );
}

#[test]
fn subscription_replay_survives_a_daemon_restart() {
    let relay = Relay::start();
    let mut d = daemon();
    let mut c = d.client();
    c.ok(
        "account.create",
        json!({"name": "replay", "relay": relay.host}),
    );
    drop(c);
    d.stop();
    d.start();
    let mut c = d.client();
    let last = c.ok("daemon.status", json!({}))["last_event_seq"]
        .as_u64()
        .unwrap();
    assert!(last >= 1);
    let sub = c.ok("events.subscribe", json!({"since": 0}));
    let mut seqs = Vec::new();
    while seqs.last() != Some(&last) {
        let n = c.read();
        assert_eq!(n["params"]["subscription"], sub);
        if seqs.is_empty() {
            assert_eq!(n["params"]["result"]["seq"], 1);
            assert_eq!(n["params"]["result"]["type"], "account.created");
        }
        seqs.push(n["params"]["result"]["seq"].as_u64().unwrap());
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates: {seqs:?}"
    );
}

#[test]
fn subscribers_are_told_when_the_daemon_stops() {
    let mut d = daemon();
    let mut c = d.client();
    let sub = c.ok("events.subscribe", json!({}));
    d.stop();
    let n = c.read();
    assert_eq!(n["params"]["subscription"], sub);
    assert_eq!(n["params"]["result"]["type"], "subscription.closed");
    assert_eq!(n["params"]["result"]["reason"], "shutdown");
    c.expect_eof();
}

#[test]
fn an_oversized_line_gets_an_error_and_closes_only_that_connection() {
    let d = Daemon::new("file").config("max_line_bytes = 4096\n");
    let mut d = d;
    d.start();
    let mut other = d.client();
    let mut c = d.client();
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"daemon.status","params":{{"pad":"{}"}}}}"#,
        "x".repeat(10_000)
    );
    c.send(&big);
    let r = c.read();
    assert_eq!(r["error"]["code"], -32600);
    assert_eq!(r["error"]["data"]["kind"], "invalid_request");
    assert!(r["error"]["message"].as_str().unwrap().contains("4096"));
    c.expect_eof();
    assert!(other.ok("daemon.status", json!({}))["version"].is_string());
    // A line just under the limit is served.
    let mut ok = d.client();
    let pad = 4096 - 80;
    let line = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"daemon.status","params":{{"p":"{}"}}}}"#,
        "y".repeat(pad)
    );
    assert!(line.len() <= 4096);
    ok.send(&line);
    assert_eq!(
        ok.read()["error"]["data"]["kind"],
        "invalid_params",
        "parsed, then refused for the unknown param"
    );
    d.stop();
}

#[test]
fn the_default_limit_is_one_mebibyte() {
    let d = daemon();
    let mut c = d.client();
    let mut line = vec![b'['; 1024 * 1024 + 10];
    line.push(b'\n');
    c.send_raw(&line);
    assert_eq!(c.read()["error"]["code"], -32600);
    c.expect_eof();
    let mut again = RawClient::connect(&d.socket()).unwrap();
    assert!(again.ok("daemon.status", json!({}))["version"].is_string());
}

#[test]
fn rpc_discover_lists_exactly_the_served_methods() {
    let d = daemon();
    let mut c = d.client();
    let doc = c.ok("rpc.discover", json!({}));
    assert_eq!(doc["openrpc"], sotto_protocol::openrpc::OPENRPC_VERSION);
    let listed: Vec<String> = doc["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();
    for required in [
        "daemon.status",
        "daemon.shutdown",
        "rpc.discover",
        "account.create",
        "account.info",
        "events.subscribe",
        "events.unsubscribe",
    ] {
        assert!(
            listed.iter().any(|m| m == required),
            "{required} missing from rpc.discover"
        );
    }
    // Every method of the protocol that the daemon answers must be listed, and vice versa.
    for m in sotto_protocol::methods::ALL {
        let r = c.call(m.name, json!({"__probe__": true}));
        let served = r["error"]["code"] != -32601;
        assert_eq!(
            served,
            listed.iter().any(|l| l == m.name),
            "{}: served={served} but listing disagrees",
            m.name
        );
    }
    // The docs describe every served method and every error kind.
    let api_md = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md"))
        .expect("docs/api.md");
    for m in &listed {
        assert!(
            api_md.contains(&format!("`{m}`")),
            "docs/api.md does not describe {m}"
        );
    }
    for k in sotto_protocol::ErrorKind::ALL {
        assert!(
            api_md.contains(&format!("`{}`", k.as_str())),
            "docs/api.md does not list the error kind {k}"
        );
    }
}
