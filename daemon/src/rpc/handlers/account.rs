//! `account.*`.

use sotto_protocol::methods::{AccountCreate, AccountInfo};

use crate::rpc::Registry;

pub fn register(r: &mut Registry) {
    r.register::<AccountCreate, _, _>(|ctx, p| async move {
        ctx.service
            .account_create_invited(&p.name, &p.relay, p.invite.as_deref())
            .await
    });
    r.register::<AccountInfo, _, _>(|ctx, _| async move { ctx.service.account_info().await });
}
