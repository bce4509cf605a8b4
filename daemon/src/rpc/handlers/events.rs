//! `events.subscribe` / `events.unsubscribe`: string subscription ids, the reply before any
//! notification, notifications as `{"method":"event","params":{subscription,result}}`.

use serde_json::{Value, json};
use sotto_protocol::methods::{EVENT_NOTIFICATION, EventsSubscribe, EventsUnsubscribe};

use crate::rpc::Registry;
use crate::service::Delivery;

pub fn register(r: &mut Registry) {
    r.register::<EventsSubscribe, _, _>(|ctx, p| async move {
        let subscription = ctx.service.subscribe(p.since).await?;
        let id = format!("sub-{}", hex::encode(rand::random::<[u8; 8]>()));
        let writer = ctx.conn.writer();
        let conn = ctx.conn.clone();
        let sub_id = id.clone();
        let map_id = id.clone();
        // Start delivering only once the reply is queued: rule 7 of API.md.
        ctx.after_reply(move || {
            let task = tokio::spawn(async move {
                subscription
                    .run(|delivery| {
                        let writer = writer.clone();
                        let sub_id = sub_id.clone();
                        async move {
                            let result: Value = match delivery {
                                Delivery::Event(e) => {
                                    serde_json::to_value(e).unwrap_or(Value::Null)
                                }
                                Delivery::Closed(c) => {
                                    serde_json::to_value(c).unwrap_or(Value::Null)
                                }
                            };
                            let line = json!({
                                "jsonrpc": "2.0",
                                "method": EVENT_NOTIFICATION,
                                "params": {"subscription": sub_id, "result": result},
                            });
                            writer.send(line.to_string()).await.is_ok()
                        }
                    })
                    .await;
            });
            conn.add_subscription(map_id, task.abort_handle());
        });
        Ok(id)
    });
    r.register::<EventsUnsubscribe, _, _>(|ctx, p| async move {
        Ok(ctx.conn.remove_subscription(&p.subscription))
    });
}
