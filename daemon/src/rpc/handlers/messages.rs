//! `message.*`.

use sotto_protocol::methods::{MessageList, MessageSearch, MessageSend};

use crate::rpc::Registry;

pub fn register(r: &mut Registry) {
    r.register::<MessageSend, _, _>(|ctx, p| async move { ctx.service.message_send(p).await });
    r.register::<MessageList, _, _>(|ctx, p| async move { ctx.service.message_list(p).await });
    r.register::<MessageSearch, _, _>(|ctx, p| async move { ctx.service.message_search(p).await });
}
