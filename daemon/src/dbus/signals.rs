//! The live event stream as D-Bus signals, PropertiesChanged and desktop notifications.

use std::sync::Arc;

use sotto_protocol::ErrorKind;
use sotto_protocol::api::{Event, EventPayload};
use tokio::sync::mpsc;
use zbus::object_server::InterfaceRef;
use zbus::zvariant::Value;

use super::convert;
use super::interface::Sotto1;
use super::notify::Notifier;
use crate::service::{Delivery, Service, Subscription};

/// How many events may wait between the subscription and the bus.
const QUEUE: usize = 64;

/// Emits a signal for every live event from `first` on, resubscribing from the last seq
/// when the subscription overflows; returns when the daemon stops.
pub async fn pump(
    service: Arc<Service>,
    first: Subscription,
    iface: InterfaceRef<Sotto1>,
    notifier: Option<Notifier>,
) {
    let mut subscription = first;
    loop {
        let (tx, mut rx) = mpsc::channel::<Delivery>(QUEUE);
        let producer = subscription.run(move |d| {
            let tx = tx.clone();
            async move { tx.send(d).await.is_ok() }
        });
        let consumer = async {
            let mut closed = None;
            while let Some(d) = rx.recv().await {
                match d {
                    Delivery::Event(e) => emit(&iface, notifier.as_ref(), &e).await,
                    Delivery::Closed(c) => closed = Some(c),
                }
            }
            closed
        };
        let ((), closed) = tokio::join!(producer, consumer);
        let last = match closed {
            Some(c) if c.reason == "overflow" => c.last_seq,
            _ => return,
        };
        tracing::warn!(last_seq = last, "D-Bus signals fell behind; resubscribing");
        subscription = match service.subscribe(Some(last)).await {
            Ok(s) => s,
            Err(e) if e.kind == ErrorKind::EventsExpired => {
                tracing::warn!(cause = %e, "missed events are gone; signals continue live");
                match service.subscribe(None).await {
                    Ok(s) => s,
                    Err(e) => return tracing::error!(cause = %e, "D-Bus signals stopped"),
                }
            }
            Err(e) => return tracing::error!(cause = %e, "D-Bus signals stopped"),
        };
    }
}

/// The signal (and property change, and notification) of one event.
async fn emit(iface: &InterfaceRef<Sotto1>, notifier: Option<&Notifier>, e: &Event) {
    let em = iface.signal_emitter();
    let mut extras = convert::extras(e.seq);
    let sent = match &e.payload {
        EventPayload::MessageReceived { message: m } => {
            if let Some(n) = notifier {
                n.notify(m);
            }
            let mut fields = convert::message(m);
            for k in ["conversation", "id", "sender", "text", "sent_at"] {
                fields.remove(k);
            }
            extras.extend(fields);
            let sender = m.sender.to_string();
            Sotto1::message_received(
                em,
                &m.conversation,
                &m.id,
                &sender,
                &m.text,
                &m.sent_at,
                extras,
            )
            .await
        }
        EventPayload::MessageState {
            conversation,
            message_id,
            state,
            error,
        } => {
            if let Some(err) = error {
                extras.insert("error".into(), Value::from(convert::error_info(err)));
            }
            let state = serde_json::to_value(state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            Sotto1::message_state_changed(em, conversation, message_id, &state, extras).await
        }
        EventPayload::ConversationJoined { conversation: c }
        | EventPayload::ConversationChanged { conversation: c }
        | EventPayload::ConversationChangeFailed { conversation: c }
        | EventPayload::ConversationRemoved { conversation: c }
        | EventPayload::ConversationBroken { conversation: c } => {
            extras.insert("type".into(), Value::from(e.payload.type_name()));
            extras.insert("conversation".into(), Value::from(convert::conversation(c)));
            Sotto1::conversation_changed(em, &c.id, extras).await
        }
        EventPayload::RelayConnected { url } | EventPayload::RelayDisconnected { url } => {
            let up = matches!(e.payload, EventPayload::RelayConnected { .. });
            let sent = Sotto1::connection_changed(em, url, up, extras).await;
            let changed = iface.get().await.connected_changed(em).await;
            sent.and(changed)
        }
        EventPayload::AccountCreated { .. } => iface.get().await.address_changed(em).await,
        _ => Ok(()),
    };
    if let Err(err) = sent {
        tracing::debug!(seq = e.seq, cause = %err, "emitting a D-Bus signal failed");
    }
}
