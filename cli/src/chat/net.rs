//! The chat's two connections to the daemon, each on its own thread: one makes the calls
//! the app asks for, one holds the event subscription. The subscription thread remembers
//! the last `seq` it passed on and, whenever the connection breaks, reconnects with a
//! backoff capped at 2 s and resubscribes from that seq, so nothing is missed or repeated.
//! Neither thread ever prints: everything goes to the app, which shows it in the status line.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use serde_json::Value;
use sotto_protocol::ErrorKind;
use sotto_protocol::api::{Status, SubscriptionClosed};
use sotto_protocol::methods::{DaemonStatus, EventsSubscribe, NoParams, SubscribeParams};

use super::app::{Failure, NetEvent, Request};
use crate::client::{Client, ClientError};

/// The first wait before reconnecting.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// The longest wait between reconnect attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Starts both threads; returns where to send requests.
pub fn start(socket: PathBuf, to_app: Sender<NetEvent>) -> Sender<Request> {
    let (tx, rx) = std::sync::mpsc::channel();
    let calls_socket = socket.clone();
    let calls_app = to_app.clone();
    std::thread::Builder::new()
        .name("sotto-chat-calls".into())
        .spawn(move || calls(&calls_socket, &rx, &calls_app))
        .ok();
    std::thread::Builder::new()
        .name("sotto-chat-events".into())
        .spawn(move || events(&socket, &to_app))
        .ok();
    tx
}

fn failure(e: &ClientError) -> Failure {
    match e {
        ClientError::Rpc(err) => Failure {
            message: err.message.clone(),
            code: Some(i64::from(err.code)),
            unreachable: false,
        },
        ClientError::NotRunning { .. } | ClientError::Io(_) => Failure {
            message: "sottod is not reachable".into(),
            code: None,
            unreachable: true,
        },
        ClientError::Decode(m) => Failure {
            message: m.clone(),
            code: None,
            unreachable: false,
        },
    }
}

/// Makes each call on one connection, reconnecting when it broke.
fn calls(socket: &Path, rx: &Receiver<Request>, to_app: &Sender<NetEvent>) {
    let mut client: Option<Client> = None;
    while let Ok(req) = rx.recv() {
        let (method, params) = req.to_call();
        if client.is_none() {
            client = Client::connect(socket).ok();
        }
        let result = match client.as_mut() {
            Some(c) => c.call_raw(method, params).map_err(|e| {
                let f = failure(&e);
                if f.unreachable {
                    client = None;
                }
                f
            }),
            None => Err(Failure {
                message: "sottod is not reachable".into(),
                code: None,
                unreachable: true,
            }),
        };
        if to_app.send(NetEvent::Reply(req, result)).is_err() {
            return;
        }
    }
}

/// Why one subscription session ended.
enum End {
    /// The app is gone: stop.
    AppGone,
    /// The daemon closed the subscription (overflow, shutdown) or the connection broke.
    Lost(String),
}

fn events(socket: &Path, to_app: &Sender<NetEvent>) {
    let mut last_seq: Option<u64> = None;
    let mut backoff = BACKOFF_START;
    let mut up = false;
    loop {
        match session(socket, &mut last_seq, to_app, &mut up) {
            End::AppGone => return,
            End::Lost(why) => {
                if up {
                    up = false;
                    backoff = BACKOFF_START;
                }
                if to_app.send(NetEvent::Disconnected(why)).is_err() {
                    return;
                }
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn session(
    socket: &Path,
    last_seq: &mut Option<u64>,
    to_app: &Sender<NetEvent>,
    up: &mut bool,
) -> End {
    let lost = |e: ClientError| End::Lost(e.to_string());
    let mut client = match Client::connect(socket) {
        Ok(c) => c,
        Err(e) => return lost(e),
    };
    let status: Status = match client.call::<DaemonStatus>(&NoParams {}) {
        Ok(s) => s,
        Err(e) => return lost(e),
    };
    let since = last_seq.unwrap_or(status.last_event_seq);
    let subscription = match client.call::<EventsSubscribe>(&SubscribeParams { since: Some(since) })
    {
        Ok(s) => s,
        Err(ClientError::Rpc(err)) if err.kind() == Some(ErrorKind::EventsExpired) => {
            // Gone from the backlog: start from now and have the app reload what it shows.
            if to_app.send(NetEvent::Expired).is_err() {
                return End::AppGone;
            }
            match client.call::<EventsSubscribe>(&SubscribeParams {
                since: Some(status.last_event_seq),
            }) {
                Ok(s) => {
                    *last_seq = Some(status.last_event_seq);
                    s
                }
                Err(e) => return lost(e),
            }
        }
        Err(e) => return lost(e),
    };
    last_seq.get_or_insert(since);
    *up = true;
    if to_app.send(NetEvent::Connected(Box::new(status))).is_err() {
        return End::AppGone;
    }
    loop {
        let msg = match client.read_message() {
            Ok(m) => m,
            Err(e) => return lost(e),
        };
        if msg.get("method").and_then(Value::as_str) != Some("event") {
            continue;
        }
        let params = &msg["params"];
        if params["subscription"].as_str() != Some(subscription.as_str()) {
            continue;
        }
        let result = &params["result"];
        if result["type"].as_str() == Some(SubscriptionClosed::TYPE) {
            let reason = result["reason"].as_str().unwrap_or("closed").to_owned();
            return End::Lost(format!("the daemon ended the subscription ({reason})"));
        }
        let Some(seq) = result["seq"].as_u64() else {
            continue;
        };
        if last_seq.is_some_and(|last| seq <= last) {
            continue;
        }
        if to_app.send(NetEvent::Event(result.clone())).is_err() {
            return End::AppGone;
        }
        *last_seq = Some(seq);
    }
}
