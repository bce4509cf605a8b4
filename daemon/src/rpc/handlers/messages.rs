//! `message.*`.

use sotto_protocol::methods::{MessageList, MessageSearch, MessageSend};

use crate::rpc::Registry;

pub fn register(r: &mut Registry) {
    // The next request on the connection may start once this send's write is queued:
    // consecutive sends of one client share a commit (group commit).
    r.register::<MessageSend, _, _>(|ctx, p| async move {
        let pending = ctx.service.message_send_queued(p).await?;
        ctx.release_turn();
        pending.await
    });
    r.register::<MessageList, _, _>(|ctx, p| async move { ctx.service.message_list(p).await });
    r.register::<MessageSearch, _, _>(|ctx, p| async move { ctx.service.message_search(p).await });
}
