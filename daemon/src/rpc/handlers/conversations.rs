//! `conversation.*`.

use sotto_protocol::methods::{
    ConversationAdd, ConversationCreate, ConversationGet, ConversationLeave, ConversationList,
    ConversationMarkRead, ConversationRemove, ConversationRename, ConversationRotateKeys,
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
    r.register::<ConversationRemove, _, _>(|ctx, p| async move {
        ctx.service.conversation_remove(p).await
    });
    r.register::<ConversationLeave, _, _>(|ctx, p| async move {
        ctx.service.conversation_leave(&p.conversation).await
    });
    r.register::<ConversationRename, _, _>(|ctx, p| async move {
        ctx.service.conversation_rename(p).await
    });
    r.register::<ConversationMarkRead, _, _>(|ctx, p| async move {
        ctx.service.conversation_mark_read(p).await
    });
    r.register::<ConversationRotateKeys, _, _>(|ctx, p| async move {
        ctx.service.conversation_rotate_keys(&p.conversation).await
    });
}
