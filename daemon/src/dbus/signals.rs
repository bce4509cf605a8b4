//! The live event stream as D-Bus signals, PropertiesChanged and desktop notifications.

use std::sync::Arc;

use sotto_protocol::ErrorKind;
use sotto_protocol::api::{Event, EventPayload};
use zbus::object_server::InterfaceRef;
use zbus::zvariant::Value;

use super::convert;
use super::interface::Sotto1;
use super::notify::Notifier;
use crate::service::{Delivery, Service, Subscription};

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
        let mut closed = None;
        let (iface, notifier) = (&iface, notifier.as_ref());
        // Emitting inside the sink is the backpressure: a bus slower than the events makes
        // the subscription overflow, and it is resumed from its last seq below.
        subscription
            .run(|delivery| {
                let event = match delivery {
                    Delivery::Event(e) => Some(e),
                    Delivery::Closed(c) => {
                        closed = Some(c);
                        None
                    }
                };
                async move {
                    if let Some(e) = event {
                        emit(iface, notifier, &e).await;
                    }
                    true
                }
            })
            .await;
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
        | EventPayload::ConversationChangeFailed {
            conversation: c, ..
        }
        | EventPayload::ConversationRemoved { conversation: c }
        | EventPayload::ConversationBroken { conversation: c }
        | EventPayload::ConversationRead { conversation: c } => {
            extras.insert("type".into(), Value::from(e.payload.type_name()));
            extras.insert("unread".into(), Value::from(convert::unread_u32(c.unread)));
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
