//! `contact.*`.

use sotto_protocol::methods::{
    ContactAdd, ContactList, ContactRemove, ContactSafetyNumber, ContactTrust, ContactVerify,
    Empty, SafetyNumber,
};

use crate::rpc::Registry;

pub fn register(r: &mut Registry) {
    r.register::<ContactAdd, _, _>(|ctx, p| async move { ctx.service.contact_add(p).await });
    r.register::<ContactList, _, _>(|ctx, _| async move { ctx.service.contact_list().await });
    r.register::<ContactRemove, _, _>(|ctx, p| async move {
        ctx.service
            .contact_remove(&p.address)
            .await
            .map(|()| Empty {})
    });
    r.register::<ContactSafetyNumber, _, _>(|ctx, p| async move {
        let safety_number = ctx.service.contact_safety_number(&p.address).await?;
        Ok(SafetyNumber { safety_number })
    });
    r.register::<ContactVerify, _, _>(|ctx, p| async move { ctx.service.contact_verify(p).await });
    r.register::<ContactTrust, _, _>(|ctx, p| async move { ctx.service.contact_trust(p).await });
}
