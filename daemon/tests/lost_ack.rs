//! A lost acknowledgement: a TCP proxy between the daemons and the relay forwards the
//! daemon's post to the relay, then drops the relay's answer and cuts the connection. The
//! daemon must retry the same bytes under the same post id, recognise its own entry in
//! the log, and end on the group's epoch (no fork) with the message delivered once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::{Value, json};
use sotto_protocol::relay::{ClientFrame, Request, content_type};
use sotto_testkit::proxy::Watcher;

use crate::support::proxied::ProxiedRelays;
use crate::support::{Daemon, wait_for};

/// What the proxy drops next: nothing, the answer to the next commit, or to the next
/// application message.
const PASS: u8 = 0;
const DROP_COMMIT_ACK: u8 = 1;
const DROP_MESSAGE_ACK: u8 = 2;

/// Watches one connection's client bytes: WebSocket frames after the HTTP upgrade. A post
/// matching the armed `mode` disarms it and has its answer lost.
fn watch_posts(mode: Arc<AtomicU8>) -> Watcher {
    let mut pending: Vec<u8> = Vec::new();
    let mut upgraded = false;
    Box::new(move |bytes| {
        pending.extend_from_slice(bytes);
        if !upgraded {
            let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                return false;
            };
            upgraded = true;
            pending.drain(..end + 4);
        }
        let mut lose = false;
        while let Some((payload, used)) = ws_frame(&pending) {
            pending.drain(..used);
            let armed = mode.load(Ordering::SeqCst);
            if armed == PASS {
                continue;
            }
            // Commits go out as `PostCommit` (with their GroupInfo), messages as `PostGroup`.
            if let Ok(ClientFrame {
                request: Request::PostGroup { message, .. } | Request::PostCommit { message, .. },
                ..
            }) = sotto_protocol::wire::decode::<ClientFrame>(&payload)
            {
                // The content type is read from the MLS framing, as the relay does.
                let is_commit = mls_content_type(&message) == Some(content_type::COMMIT);
                if (armed == DROP_COMMIT_ACK && is_commit)
                    || (armed == DROP_MESSAGE_ACK && !is_commit)
                {
                    mode.store(PASS, Ordering::SeqCst);
                    lose = true;
                }
            }
        }
        lose
    })
}

/// One complete masked client frame at the start of `buf`: (unmasked payload, bytes used).
fn ws_frame(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let masked = buf[1] & 0x80 != 0;
    let mut len = u64::from(buf[1] & 0x7f);
    let mut pos = 2;
    if len == 126 {
        len = u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?));
        pos = 4;
    } else if len == 127 {
        len = u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?);
        pos = 10;
    }
    let mask: [u8; 4] = if masked {
        let m = buf.get(pos..pos + 4)?.try_into().ok()?;
        pos += 4;
        m
    } else {
        [0; 4]
    };
    let end = pos + usize::try_from(len).ok()?;
    let data = buf.get(pos..end)?;
    let payload = data
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect();
    Some((payload, end))
}

/// The content type of a TLS-serialized MlsMessage, read with openmls.
fn mls_content_type(bytes: &[u8]) -> Option<u8> {
    use openmls::prelude::tls_codec::Deserialize as _;
    use openmls::prelude::*;
    let msg = MlsMessageIn::tls_deserialize_exact(bytes).ok()?;
    let proto = msg.try_into_protocol_message().ok()?;
    Some(match proto.content_type() {
        ContentType::Application => content_type::APPLICATION,
        ContentType::Proposal => content_type::PROPOSAL,
        ContentType::Commit => content_type::COMMIT,
    })
}

fn epoch_of(d: &Daemon, conv: &str) -> u64 {
    d.client()
        .ok("conversation.get", json!({"conversation": conv}))["epoch"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_lost_ack_for_a_commit_or_a_message_forks_nothing_and_duplicates_nothing() {
    // The relay announces the proxy's address as its public URL: daemons connect through it.
    let net = ProxiedRelays::start(1, &[]);
    let mode = Arc::new(AtomicU8::new(PASS));
    let m = Arc::clone(&mode);
    net.proxy.lose_answers(move || watch_posts(Arc::clone(&m)));
    let proxy = &net.proxy;
    let host = net.host();
    let (alice, _) = net.daemon("alice", 0);
    let (bob, _) = net.daemon("bob", 0);
    let (carol, carol_a) = net.daemon("carol", 0);

    // The answer to the group's first commit is lost.
    mode.store(DROP_COMMIT_ACK, Ordering::SeqCst);
    let conv = alice.sotto_json(&[
        "conversation",
        "create",
        "--name",
        "ack",
        &format!("bob@{host}"),
    ])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(proxy.answers_lost(), 1, "the commit's answer was dropped");
    bob.wait_conversation("the Welcome", |c| c["id"] == conv.as_str());
    // And the answer to an add's commit.
    mode.store(DROP_COMMIT_ACK, Ordering::SeqCst);
    alice.sotto_json(&["conversation", "add", "ack", &carol_a]);
    assert_eq!(proxy.answers_lost(), 2);
    carol.wait_conversation("the Welcome", |c| c["id"] == conv.as_str());
    let e = epoch_of(&alice, &conv);
    wait_for("bob on alice's epoch", || {
        (epoch_of(&bob, &conv) == e).then_some(())
    });
    assert_eq!(epoch_of(&carol, &conv), e, "no fork");

    // The answer to a message is lost.
    mode.store(DROP_MESSAGE_ACK, Ordering::SeqCst);
    let sent = alice.sotto_json(&["send", "ack", "exactly once"]);
    assert_eq!(sent["state"], "sent", "{sent}");
    assert_eq!(proxy.answers_lost(), 3);
    for d in [&bob, &carol] {
        let got = d.wait_messages(&conv, "the message", |l| !l.is_empty());
        assert_eq!(
            got.iter()
                .map(|m| m["text"].clone())
                .collect::<Vec<Value>>(),
            [json!("exactly once")]
        );
    }
    // Later traffic still flows and everyone agrees.
    bob.sotto_ok(&["send", "ack", "after"]);
    let all = carol.wait_messages(&conv, "two messages", |l| l.len() == 2);
    assert_eq!(all[1]["text"], "after");
    assert_eq!(
        alice
            .wait_messages(&conv, "alice's history", |l| l.len() == 2)
            .len(),
        2,
        "no duplicate on alice's side"
    );
    assert_eq!(epoch_of(&alice, &conv), epoch_of(&bob, &conv));
}
