//! `conversation.*`.

use sotto_protocol::methods::{
    ConversationAdd, ConversationCreate, ConversationGet, ConversationList,
};

use crate::rpc::Registry;

pub fn register(r: &mut Registry) {
    r.register::<ConversationCreate, _, _>(|ctx, p| async move {
        ctx.service.conversation_create(p).await
    });
    r.register::<ConversationList, _, _>(
        |ctx, _| async move { ctx.service.conversation_list().await },
    );
    r.register::<ConversationGet, _, _>(|ctx, p| async move {
        ctx.service.conversation_get(&p.conversation).await
    });
    r.register::<ConversationAdd, _, _>(
        |ctx, p| async move { ctx.service.conversation_add(p).await },
    );
}
