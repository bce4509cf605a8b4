//! `account.*`.

use sotto_protocol::methods::{AccountCreate, AccountInfo, BackupExport, BackupImport};

use crate::rpc::Registry;

pub fn register(r: &mut Registry) {
    r.register::<AccountCreate, _, _>(|ctx, p| async move {
        ctx.service
            .account_create_invited(&p.name, &p.relay, p.invite.as_deref())
            .await
    });
    r.register::<AccountInfo, _, _>(|ctx, _| async move { ctx.service.account_info().await });
    r.register::<BackupExport, _, _>(|ctx, p| async move {
        ctx.service.backup_export(&p.path, &p.passphrase).await
    });
    r.register::<BackupImport, _, _>(|ctx, p| async move {
        ctx.service.backup_import(&p.path, &p.passphrase).await
    });
}
