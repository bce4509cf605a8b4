//! `daemon.*` and `rpc.discover`.

use sotto_protocol::methods::{DaemonShutdown, DaemonStatus, Empty, RpcDiscover};

use crate::rpc::Registry;

pub fn register(r: &mut Registry) {
    r.register::<DaemonStatus, _, _>(|ctx, _| async move { ctx.service.status().await });
    r.register::<DaemonShutdown, _, _>(|ctx, _| async move {
        let service = ctx.service.clone();
        tracing::info!("daemon.shutdown requested");
        ctx.after_reply(move || service.request_shutdown());
        Ok(Empty {})
    });
    r.register::<RpcDiscover, _, _>(|_, _| async move {
        let names = crate::rpc::registry().names();
        Ok(sotto_protocol::openrpc::document(
            env!("CARGO_PKG_VERSION"),
            &names,
        ))
    });
}
