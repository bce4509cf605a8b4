//! Every field of every object reaches the dict: converting back to JSON gives the JSON-RPC
//! result with its null fields dropped. A field added to a protocol type fails here until
//! the converter carries it.

use serde::Serialize;
use serde_json::{Value as Json, json};
use sotto_protocol::Address;
use sotto_protocol::api::*;
use zbus::zvariant::Value;

use super::*;
use crate::dbus::params::to_json;

fn drop_nulls(v: Json) -> Json {
    match v {
        Json::Object(m) => Json::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, drop_nulls(v)))
                .collect(),
        ),
        Json::Array(a) => Json::Array(a.into_iter().map(drop_nulls).collect()),
        other => other,
    }
}

fn same<T: Serialize>(obj: &T, dict: Dict) {
    let expected = drop_nulls(serde_json::to_value(obj).unwrap());
    let got = to_json(&Value::from(dict)).unwrap();
    assert_eq!(got, expected);
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn sample_account() -> Account {
    Account {
        address: addr("alice@relay.example"),
        device_id: "0a1b".into(),
        fingerprint: "ff".repeat(32),
        relay: "wss://relay.example/sotto/v1".into(),
        key_store: KeyStoreKind::File,
        state: sotto_protocol::api::AccountState::Active,
    }
}

fn sample_conversation() -> Conversation {
    Conversation {
        id: "c0ffee".into(),
        name: Some("team".into()),
        kind: ConversationKind::Group,
        state: ConversationState::Active,
        members: vec![addr("alice@relay.example"), addr("bob@relay.example")],
        epoch: 3,
        ciphersuite: "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519".into(),
        relay: "wss://relay.example/sotto/v1".into(),
        pending: vec![PendingChange {
            id: "p1".into(),
            op: "add".into(),
            state: "queued".into(),
        }],
        unread: 2,
        last_message: Some(sample_message(false)),
        last_activity_at: "2026-01-01T00:00:01Z".into(),
        state_reason: None,
    }
}

fn sample_message(error: bool) -> Message {
    Message {
        id: "m1".into(),
        conversation: "c0ffee".into(),
        sender: addr("bob@relay.example"),
        kind: "text".into(),
        text: "hello".into(),
        reply_to: error.then(|| "m0".into()),
        sent_at: "2026-01-01T00:00:00Z".into(),
        received_at: (!error).then(|| "2026-01-01T00:00:01Z".into()),
        state: if error {
            MessageState::Failed
        } else {
            MessageState::Received
        },
        error: error.then(|| ErrorInfo {
            kind: "relay".into(),
            message: "relay refused".into(),
        }),
        position: 7,
    }
}

#[test]
fn objects_carry_every_field() {
    let account = sample_account();
    same(&account, super::account(&account));
    let status = Status {
        version: "0.1.0".into(),
        protocol: 1,
        account: Some(account.clone()),
        relays: vec![RelayStatus {
            url: account.relay.clone(),
            connected: false,
        }],
        uptime_s: 5,
        last_event_seq: 9,
        max_text_bytes: 16384,
        ephemeral: false,
    };
    same(&status, super::status(&status));
    let empty = Status {
        account: None,
        relays: vec![],
        ..status
    };
    same(&empty, super::status(&empty));
    let conv = sample_conversation();
    same(&conv, super::conversation(&conv));
    let broken = Conversation {
        state: ConversationState::Broken,
        state_reason: Some("the resync is impossible: no GroupInfo".into()),
        ..sample_conversation()
    };
    same(&broken, super::conversation(&broken));
    for failed in [false, true] {
        let m = sample_message(failed);
        same(&m, super::message(&m));
    }
    let c = Contact {
        address: addr("bob@relay.example"),
        alias: None,
        fingerprint: "ab".repeat(32),
        verified: true,
    };
    same(&c, super::contact(&c));
}

#[test]
fn events_are_flattened() {
    let payloads = vec![
        EventPayload::AccountCreated {
            account: sample_account(),
        },
        EventPayload::MessageReceived {
            message: sample_message(false),
        },
        EventPayload::MessageState {
            conversation: "c0ffee".into(),
            message_id: "m1".into(),
            state: MessageState::Sent,
            error: None,
        },
        EventPayload::ConversationChanged {
            conversation: sample_conversation(),
        },
        EventPayload::ConversationRead {
            conversation: Conversation {
                last_message: None,
                unread: 0,
                ..sample_conversation()
            },
        },
        EventPayload::ContactIdentityChanged {
            address: addr("bob@relay.example"),
            old_fingerprint: "aa".into(),
            new_fingerprint: "bb".into(),
        },
        EventPayload::RelayConnected {
            url: "ws://127.0.0.1:1/sotto/v1".into(),
        },
    ];
    for (i, payload) in payloads.into_iter().enumerate() {
        let e = Event {
            seq: i as u64 + 1,
            payload,
        };
        same(&e, super::event(&e));
    }
    let d = super::event(&Event {
        seq: 1,
        payload: EventPayload::Unknown,
    });
    assert_eq!(
        to_json(&Value::from(d)).unwrap(),
        json!({"seq": 1, "type": "unknown"})
    );
}

#[test]
fn empty_lists_keep_their_element_type() {
    let d = super::status(&Status {
        version: "v".into(),
        protocol: 1,
        account: None,
        relays: vec![],
        uptime_s: 0,
        last_event_seq: 0,
        max_text_bytes: 1,
        ephemeral: false,
    });
    assert_eq!(d["relays"].value_signature().to_string(), "aa{sv}");
    assert_eq!(d["protocol"].value_signature().to_string(), "u");
    assert_eq!(d["last_event_seq"].value_signature().to_string(), "t");
}
