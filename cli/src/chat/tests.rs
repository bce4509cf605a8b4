//! Rendering snapshots through ratatui's `TestBackend` (`cargo insta review` after a change
//! that is meant to alter the screen), and the app's reactions to keys and daemon events.

#![allow(clippy::unwrap_used)]

use jiff::tz::TimeZone;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::{Value, json};
use sotto_protocol::api::{Message, Status};

use super::app::{App, Failure, Focus, NetEvent, Overlay, Request};
use super::ui;

const ME: &str = "alice@r.example";

fn conv(
    id: &str,
    name: Option<&str>,
    peer: &str,
    unread: Option<u64>,
    last: Option<Value>,
) -> Value {
    let mut v = json!({
        "id": id, "name": name, "kind": if name.is_some() { "group" } else { "direct" },
        "state": "active", "members": [ME, peer], "epoch": 1,
        "ciphersuite": "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
        "relay": "wss://r.example/sotto/v1", "pending": []
    });
    if let Some(n) = unread {
        v["unread"] = json!(n);
    }
    if let Some(m) = last {
        v["last_activity_at"] = m["sent_at"].clone();
        v["last_message"] = m;
    }
    v
}

fn msg(id: &str, conv: &str, sender: &str, text: &str, at: &str, state: &str, pos: u64) -> Value {
    json!({
        "id": id, "conversation": conv, "sender": sender, "kind": "text", "text": text,
        "reply_to": null, "sent_at": at,
        "received_at": if state == "received" { Some(at) } else { None },
        "state": state,
        "error": if state == "failed" { Some(json!({"kind": "relay_rejected", "message": "too large for the relay"})) } else { None },
        "position": pos
    })
}

fn status() -> Status {
    serde_json::from_value(json!({
        "version": "0.1.0", "protocol": 1,
        "account": {"address": ME, "device_id": "d1", "fingerprint": "ab", "relay": "wss://r.example/sotto/v1", "key_store": "file"},
        "relays": [{"url": "wss://r.example/sotto/v1", "connected": true}],
        "uptime_s": 5, "last_event_seq": 10, "max_text_bytes": 65536
    }))
    .unwrap()
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

/// An app connected to a daemon with three conversations, the first one open.
fn app_with_history(history: Vec<Value>) -> App {
    let mut app = App::new(TimeZone::UTC, None);
    app.on_resize(80, 20);
    app.on_net(NetEvent::Connected(Box::new(status())));
    app.outbox.clear();
    let list = json!([
        conv(
            "c1",
            None,
            "bob@r.example",
            Some(0),
            history.last().cloned()
        ),
        conv(
            "c2",
            Some("book club"),
            "carol@r.example",
            Some(3),
            Some(msg(
                "x1",
                "c2",
                "carol@r.example",
                "chapter 4 tonight?",
                "2026-12-01T09:00:00Z",
                "received",
                1
            ))
        ),
        conv("c3", None, "dave@other.example", None, None),
    ]);
    app.on_net(NetEvent::Reply(Request::Conversations, Ok(list)));
    app.on_key(key(KeyCode::Enter));
    let out: Vec<Request> = app.outbox.drain(..).collect();
    assert_eq!(
        out,
        vec![Request::History {
            conversation: "c1".into(),
            before: None
        }]
    );
    app.on_net(NetEvent::Reply(
        Request::History {
            conversation: "c1".into(),
            before: None,
        },
        Ok(Value::Array(history)),
    ));
    app
}

fn draw(app: &App) -> String {
    let mut terminal = Terminal::new(TestBackend::new(app.size.0, app.size.1)).unwrap();
    terminal.draw(|f| ui::render(f, app)).unwrap();
    terminal.backend().to_string()
}

fn basic_history() -> Vec<Value> {
    vec![
        msg(
            "m1",
            "c1",
            "bob@r.example",
            "hi alice, lunch tomorrow?",
            "2026-11-30T12:00:00Z",
            "received",
            1,
        ),
        msg(
            "m2",
            "c1",
            ME,
            "sure, noon at the usual place",
            "2026-11-30T12:01:00Z",
            "sent",
            2,
        ),
        msg(
            "m3",
            "c1",
            "bob@r.example",
            "great, see you",
            "2026-12-01T08:30:00Z",
            "received",
            3,
        ),
    ]
}

#[test]
fn list_and_history() {
    let app = app_with_history(basic_history());
    insta::assert_snapshot!(draw(&app));
}

#[test]
fn list_before_anything_loaded() {
    let mut app = App::new(TimeZone::UTC, None);
    app.on_resize(60, 10);
    insta::assert_snapshot!(draw(&app));
}

#[test]
fn long_lines_wrap() {
    let long = "This is a long message that does not fit on one line of the history pane, so it wraps at word boundaries onto the next lines without losing a word.";
    let app = app_with_history(vec![msg(
        "m1",
        "c1",
        "bob@r.example",
        long,
        "2026-12-01T10:00:00Z",
        "received",
        1,
    )]);
    insta::assert_snapshot!(draw(&app));
}

#[test]
fn wide_and_combining_characters() {
    let app = app_with_history(vec![
        msg(
            "m1",
            "c1",
            "bob@r.example",
            "日本語のテキストは一文字が二列を占めるので折り返しの位置が変わります。絵文字も👍🎉同じです。",
            "2026-12-01T10:00:00Z",
            "received",
            1,
        ),
        msg(
            "m2",
            "c1",
            ME,
            "café crème (e + combining accent: cafe\u{301})",
            "2026-12-01T10:01:00Z",
            "sent",
            2,
        ),
    ]);
    let screen = draw(&app);
    insta::assert_snapshot!(screen);
}

#[test]
fn message_states() {
    let app = app_with_history(vec![
        msg(
            "m1",
            "c1",
            ME,
            "delivered to the relay",
            "2026-12-01T10:00:00Z",
            "sent",
            1,
        ),
        msg(
            "m2",
            "c1",
            ME,
            "waiting for the relay",
            "2026-12-01T10:01:00Z",
            "queued",
            100,
        ),
        msg(
            "m3",
            "c1",
            ME,
            "this one could not go",
            "2026-12-01T10:02:00Z",
            "failed",
            101,
        ),
    ]);
    insta::assert_snapshot!(draw(&app));
}

#[test]
fn help_overlay() {
    let mut app = app_with_history(basic_history());
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.focus, Focus::List);
    app.on_key(key(KeyCode::Char('?')));
    assert_eq!(app.overlay, Overlay::Help);
    insta::assert_snapshot!(draw(&app));
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.overlay, Overlay::None);
}

#[test]
fn search_box_with_hits() {
    let mut app = app_with_history(basic_history());
    app.on_key(ctrl('f'));
    for c in "lunch".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    app.on_key(key(KeyCode::Enter));
    assert_eq!(
        app.outbox,
        vec![Request::Search {
            query: "lunch".into()
        }]
    );
    let req = app.outbox.remove(0);
    let mut hit = msg(
        "m1",
        "c1",
        "bob@r.example",
        "hi alice, lunch tomorrow?",
        "2026-11-30T12:00:00Z",
        "received",
        1,
    );
    hit["snippet"] = json!("hi alice, [lunch] tomorrow?");
    app.on_net(NetEvent::Reply(req, Ok(json!([hit]))));
    insta::assert_snapshot!(draw(&app));
    // Enter jumps: the hit is already loaded, so it is highlighted at once.
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.overlay, Overlay::None);
    assert_eq!(app.open.as_ref().unwrap().highlight.as_deref(), Some("m1"));
}

#[test]
fn typing_and_enter_sends_and_shows_the_message_queued() {
    let mut app = app_with_history(basic_history());
    assert_eq!(app.focus, Focus::Input);
    for c in "héllo 日本".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    app.on_key(key(KeyCode::Enter));
    let req = app.outbox.remove(0);
    assert_eq!(
        req,
        Request::Send {
            conversation: "c1".into(),
            text: "héllo 日本".into()
        }
    );
    assert!(app.input.text.is_empty());
    let sent = msg(
        "m9",
        "c1",
        ME,
        "héllo 日本",
        "2026-12-01T11:00:00Z",
        "queued",
        1 << 60,
    );
    app.on_net(NetEvent::Reply(req, Ok(sent.clone())));
    // The daemon's event for the same message does not add it twice.
    app.on_net(NetEvent::Event(
        json!({"seq": 11, "type": "message.created", "message": sent}),
    ));
    let h = app.open.as_ref().unwrap();
    assert_eq!(h.messages.iter().filter(|m| m.id == "m9").count(), 1);
    assert!(draw(&app).contains("you · queued"));
    app.on_net(NetEvent::Event(json!({"seq": 12, "type": "message.state", "conversation": "c1", "message_id": "m9", "state": "sent"})));
    assert!(draw(&app).contains("you · sent"));
}

#[test]
fn a_failed_send_gives_the_text_back() {
    let mut app = app_with_history(basic_history());
    for c in "keep me".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    app.on_key(key(KeyCode::Enter));
    let req = app.outbox.remove(0);
    app.on_net(NetEvent::Reply(
        req,
        Err(Failure {
            message: "sottod is not reachable".into(),
            code: None,
            unreachable: true,
        }),
    ));
    assert_eq!(app.input.text, "keep me");
    assert!(app.notice.as_deref().unwrap().contains("not sent"));
}

#[test]
fn alt_enter_inserts_a_newline() {
    let mut app = app_with_history(basic_history());
    app.on_key(key(KeyCode::Char('a')));
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT));
    app.on_key(key(KeyCode::Char('b')));
    assert_eq!(app.input.text, "a\nb");
    assert!(app.outbox.is_empty());
}

#[test]
fn messages_elsewhere_raise_unread_and_move_the_conversation_up() {
    let mut app = app_with_history(basic_history());
    let before = app
        .conversations
        .iter()
        .position(|c| c.conv.id == "c3")
        .unwrap();
    assert_eq!(before, 2);
    let m = msg(
        "d1",
        "c3",
        "dave@other.example",
        "hey there",
        "2026-12-02T08:00:00Z",
        "received",
        1,
    );
    app.on_net(NetEvent::Event(
        json!({"seq": 11, "type": "message.received", "message": m}),
    ));
    assert_eq!(app.conversations[0].conv.id, "c3");
    // c3's daemon reported no count (older daemon): none is invented.
    assert_eq!(app.conversations[0].unread, None);
    let m = msg(
        "x2",
        "c2",
        "carol@r.example",
        "or tomorrow",
        "2026-12-02T09:00:00Z",
        "received",
        2,
    );
    app.on_net(NetEvent::Event(
        json!({"seq": 12, "type": "message.received", "message": m}),
    ));
    assert_eq!(app.conversations[0].conv.id, "c2");
    assert_eq!(app.conversations[0].unread, Some(4));
    // The open conversation stays open and highlighted where it went.
    assert_eq!(app.open.as_ref().unwrap().conversation, "c1");
    assert_eq!(app.conversations[app.selected].conv.id, "c1");
}

#[test]
fn the_open_conversation_is_marked_read_when_its_newest_message_is_on_screen() {
    let mut app = app_with_history(basic_history());
    let m = msg(
        "m4",
        "c1",
        "bob@r.example",
        "are you there?",
        "2026-12-01T09:00:00Z",
        "received",
        4,
    );
    app.on_net(NetEvent::Event(
        json!({"seq": 11, "type": "message.received", "message": m}),
    ));
    assert_eq!(
        app.outbox,
        vec![Request::MarkRead {
            conversation: "c1".into(),
            up_to: "m4".into()
        }]
    );
    let req = app.outbox.remove(0);
    let mut read = conv("c1", None, "bob@r.example", Some(0), None);
    read["last_activity_at"] = json!("2026-12-01T09:00:00Z");
    app.on_net(NetEvent::Reply(req, Ok(read)));
    assert_eq!(app.open_conv().unwrap().unread, Some(0));
    assert!(app.outbox.is_empty());
}

#[test]
fn a_daemon_without_mark_read_is_not_asked_again() {
    let mut app = app_with_history(basic_history());
    let m = msg(
        "m4",
        "c1",
        "bob@r.example",
        "are you there?",
        "2026-12-01T09:00:00Z",
        "received",
        4,
    );
    app.on_net(NetEvent::Event(
        json!({"seq": 11, "type": "message.received", "message": m}),
    ));
    let req = app.outbox.remove(0);
    app.on_net(NetEvent::Reply(
        req,
        Err(Failure {
            message: "method not found".into(),
            code: Some(-32601),
            unreachable: false,
        }),
    ));
    let m = msg(
        "m5",
        "c1",
        "bob@r.example",
        "hello?",
        "2026-12-01T09:01:00Z",
        "received",
        5,
    );
    app.on_net(NetEvent::Event(
        json!({"seq": 12, "type": "message.received", "message": m}),
    ));
    assert!(app.outbox.is_empty(), "{:?}", app.outbox);
}

#[test]
fn scrolling_up_loads_older_pages_and_keeps_the_view() {
    let page: Vec<Value> = (0..super::app::PAGE as u64)
        .map(|i| {
            msg(
                &format!("m{}", 1000 + i),
                "c1",
                "bob@r.example",
                &format!("message {i}"),
                "2026-12-01T10:00:00Z",
                "received",
                1000 + i,
            )
        })
        .collect();
    let mut app = app_with_history(page);
    assert!(app.outbox.is_empty());
    // A full page means there may be more: scrolling towards the top asks for the page before.
    for _ in 0..100 {
        app.on_key(key(KeyCode::PageUp));
    }
    let older = Request::History {
        conversation: "c1".into(),
        before: Some("m1000".into()),
    };
    assert_eq!(app.outbox, vec![older.clone()]);
    app.outbox.clear();
    let scroll = app.open.as_ref().unwrap().scroll;
    let prev: Vec<Value> = (0..10)
        .map(|i| {
            msg(
                &format!("m{}", 990 + i),
                "c1",
                "bob@r.example",
                &format!("old {i}"),
                "2026-12-01T09:00:00Z",
                "received",
                990 + i,
            )
        })
        .collect();
    app.on_net(NetEvent::Reply(older, Ok(Value::Array(prev))));
    let h = app.open.as_ref().unwrap();
    assert_eq!(h.messages.len(), 110);
    assert_eq!(h.messages[0].id, "m990");
    assert!(h.at_start, "a short page is the beginning");
    assert_eq!(h.scroll, scroll, "lines from the bottom stay the same");
    insta::assert_snapshot!(draw(&app));
}

#[test]
fn a_reconnect_replays_without_duplicates_and_expired_reloads() {
    let mut app = app_with_history(basic_history());
    app.on_net(NetEvent::Disconnected("gone".into()));
    assert!(draw(&app).contains("daemon: unreachable"));
    app.on_net(NetEvent::Connected(Box::new(status())));
    assert!(app.outbox.contains(&Request::Conversations));
    app.outbox.clear();
    // Replayed: a message seen before and one new.
    for (seq, m) in [
        (11, basic_history()[2].clone()),
        (
            12,
            msg(
                "m4",
                "c1",
                "bob@r.example",
                "while you were away",
                "2026-12-01T09:00:00Z",
                "received",
                4,
            ),
        ),
    ] {
        app.on_net(NetEvent::Event(
            json!({"seq": seq, "type": "message.received", "message": m}),
        ));
    }
    let ids: Vec<&str> = app
        .open
        .as_ref()
        .unwrap()
        .messages
        .iter()
        .map(|m| m.id.as_str())
        .collect();
    assert_eq!(ids, ["m1", "m2", "m3", "m4"]);
    app.outbox.clear();
    app.on_net(NetEvent::Expired);
    assert!(app.outbox.contains(&Request::Conversations));
    assert!(app.outbox.contains(&Request::History {
        conversation: "c1".into(),
        before: None
    }));
}

#[test]
fn a_search_hit_in_older_history_pages_back_to_it() {
    let page: Vec<Value> = (0..super::app::PAGE as u64)
        .map(|i| {
            msg(
                &format!("m{}", 1000 + i),
                "c1",
                "bob@r.example",
                &format!("message {i}"),
                "2026-12-01T10:00:00Z",
                "received",
                1000 + i,
            )
        })
        .collect();
    let mut app = app_with_history(page);
    app.on_key(ctrl('f'));
    app.on_key(key(KeyCode::Char('x')));
    app.on_key(key(KeyCode::Enter));
    let req = app.outbox.remove(0);
    let hit: Message = serde_json::from_value(msg(
        "m5",
        "c1",
        "bob@r.example",
        "x marks it",
        "2026-11-01T10:00:00Z",
        "received",
        5,
    ))
    .unwrap();
    app.on_net(NetEvent::Reply(req, Ok(json!([hit]))));
    app.on_key(key(KeyCode::Enter));
    assert_eq!(
        app.outbox,
        vec![Request::History {
            conversation: "c1".into(),
            before: Some("m1000".into())
        }]
    );
    let req = app.outbox.remove(0);
    let older: Vec<Value> = (0..10)
        .map(|i| {
            msg(
                &format!("m{i}"),
                "c1",
                "bob@r.example",
                if i == 5 { "x marks it" } else { "old" },
                "2026-11-01T10:00:00Z",
                "received",
                i,
            )
        })
        .collect();
    app.on_net(NetEvent::Reply(req, Ok(Value::Array(older))));
    let h = app.open.as_ref().unwrap();
    assert_eq!(h.highlight.as_deref(), Some("m5"));
    assert!(h.jump_to.is_none());
    let screen = draw(&app);
    assert!(screen.contains("x marks it"), "{screen}");
}

#[test]
fn input_lines_measure_wide_characters() {
    let (rows, cur) = ui::input_lines("日本語テキスト", "日本語テキスト".len(), 6);
    assert_eq!(rows, ["日本語", "テキス", "ト"]);
    assert_eq!(cur, (2, 2));
    let (rows, cur) = ui::input_lines("ab\ncd", 3, 10);
    assert_eq!(rows, ["ab", "cd"]);
    assert_eq!(cur, (1, 0));
}

#[test]
fn ctrl_c_quits_from_anywhere() {
    let mut app = app_with_history(basic_history());
    app.on_key(ctrl('f'));
    app.on_key(ctrl('c'));
    assert!(app.quit);
}

#[test]
fn a_broken_conversation_says_why_in_its_header() {
    let mut app = App::new(TimeZone::UTC, None);
    app.on_resize(100, 12);
    app.on_net(NetEvent::Connected(Box::new(status())));
    app.outbox.clear();
    let mut broken = conv("c1", Some("planning"), "bob@r.example", Some(0), None);
    broken["state"] = json!("broken");
    broken["state_reason"] = json!("no GroupInfo at the relay");
    app.on_net(NetEvent::Reply(Request::Conversations, Ok(json!([broken]))));
    app.on_key(key(KeyCode::Enter));
    app.outbox.clear();
    let screen = draw(&app);
    assert!(
        screen.contains("planning  (broken: no GroupInfo at the relay)"),
        "{screen}"
    );
}
