//! D-Bus: `org.sotto.Sotto1` on the session bus, the second thin adapter over the service
//! layer (docs/dbus.md). Optional: with no session bus, with `dbus = false`, or with the
//! name already taken, the daemon logs one line and runs without it; losing the bus later
//! is logged and nothing else.

mod convert;
mod error;
mod interface;
mod notify;
mod params;
mod signals;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use zbus::Connection;
use zbus::fdo::RequestNameFlags;

pub use error::DbusError;
pub use interface::Sotto1;
pub use notify::Notifier;

use crate::service::{Service, Subscription};

/// The well-known bus name.
pub const BUS_NAME: &str = "org.sotto.Sotto1";
/// The object path.
pub const OBJECT_PATH: &str = "/org/sotto/Sotto1";
/// The interface name.
pub const INTERFACE: &str = "org.sotto.Sotto1";

/// How long connecting to the bus and claiming the name may take at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long closing the connection may take at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The running adapter, or nothing when D-Bus is off.
#[derive(Debug, Default)]
pub struct Dbus {
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    conn: Connection,
    task: JoinHandle<()>,
}

impl Dbus {
    /// Stops emitting signals and leaves the bus (releasing the name).
    pub async fn stop(self) {
        if let Some(r) = self.running {
            r.task.abort();
            if tokio::time::timeout(CLOSE_TIMEOUT, r.conn.close())
                .await
                .is_err()
            {
                tracing::debug!("closing the D-Bus connection timed out");
            }
        }
    }
}

/// Connects to the session bus and serves `org.sotto.Sotto1`, unless the config turns it
/// off; every reason to run without D-Bus is logged in one line.
pub async fn start(service: Arc<Service>) -> Dbus {
    if !service.config().dbus {
        tracing::info!("D-Bus is off (dbus = false)");
        return Dbus::default();
    }
    // Subscribed before the name appears, so a client that sees it misses no signal.
    let subscription = match service.subscribe(None).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(cause = %e, "cannot follow events; running without D-Bus");
            return Dbus::default();
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, connect(service, subscription)).await {
        Ok(Ok(running)) => Dbus {
            running: Some(running),
        },
        Ok(Err(zbus::Error::NameTaken)) => {
            tracing::warn!(
                name = BUS_NAME,
                "the D-Bus name is taken (another sottod on this bus?); running without D-Bus"
            );
            Dbus::default()
        }
        Ok(Err(e)) => {
            tracing::info!(cause = %e, "no session bus; running without D-Bus");
            Dbus::default()
        }
        Err(_) => {
            tracing::warn!("the session bus did not answer in time; running without D-Bus");
            Dbus::default()
        }
    }
}

async fn connect(service: Arc<Service>, subscription: Subscription) -> zbus::Result<Running> {
    let conn = zbus::connection::Builder::session()?
        .serve_at(OBJECT_PATH, Sotto1::new(service.clone()))?
        .build()
        .await?;
    conn.request_name_with_flags(BUS_NAME, RequestNameFlags::DoNotQueue.into())
        .await?;
    let iface = conn
        .object_server()
        .interface::<_, Sotto1>(OBJECT_PATH)
        .await?;
    let config = service.config();
    let notifier = config
        .notify
        .then(|| Notifier::new(conn.clone(), config.notify_preview));
    let watched = conn.clone();
    let task = tokio::spawn(async move {
        tokio::select! {
            () = signals::pump(service, subscription, iface, notifier) => {}
            () = watched.closed() => {
                tracing::warn!("the session bus connection ended; running without D-Bus");
            }
        }
    });
    tracing::info!(
        name = BUS_NAME,
        path = OBJECT_PATH,
        "serving on the session bus"
    );
    Ok(Running { conn, task })
}
