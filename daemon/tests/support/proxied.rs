//! Relay processes behind one [`Proxy`] (a load balancer, or a network to break): the
//! proxy's address is every process's public URL, so the proofs a daemon makes for it are
//! accepted by whichever process its connection lands on.

use serde_json::json;
use sotto_testkit::proxy::Proxy;

use super::{Daemon, RawClient, Relay, wait_for};

/// Relays and the proxy in front of them; dropping it stops them all.
pub struct ProxiedRelays {
    /// In routing order: [`Proxy::route_to`]`(i)` sends new connections to `relays[i]`.
    pub relays: Vec<Relay>,
    pub proxy: Proxy,
}

impl ProxiedRelays {
    /// `n` relay processes started with `flags` (plus the proxy's `--public-url`), behind
    /// one proxy routing to the first.
    pub fn start(n: usize, flags: &[&str]) -> ProxiedRelays {
        let proxy = Proxy::bind().expect("bind the proxy");
        let public = format!("ws://{}/sotto/v1", proxy.host);
        let mut flags = flags.to_vec();
        flags.extend(["--public-url", &public]);
        let relays: Vec<Relay> = (0..n).map(|_| Relay::start_with(&flags)).collect();
        let hosts: Vec<&str> = relays.iter().map(|r| r.host.as_str()).collect();
        proxy.set_backends(&hosts);
        ProxiedRelays { relays, proxy }
    }

    /// What daemons name as their relay: the proxy's `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        &self.proxy.host
    }

    /// A daemon (file key store) with account `name`, connected through the proxy to
    /// `relays[backend]` (or the next that accepts); returns it and its address.
    pub fn daemon(&self, name: &str, backend: usize) -> (Daemon, String) {
        self.proxy.route_to(backend);
        let mut d = Daemon::new("file");
        let address = d.account_at(self.host(), name);
        wait_for(&format!("{name} connected"), || {
            d.relays_connected().then_some(())
        });
        (d, address)
    }
}

impl Daemon {
    /// Whether `daemon.status` lists relays and every one is connected.
    pub fn relays_connected(&self) -> bool {
        RawClient::connect(&self.socket())
            .ok()
            .map(|mut c| c.call("daemon.status", json!({})))
            .and_then(|r| {
                r["result"]["relays"]
                    .as_array()
                    .map(|rs| !rs.is_empty() && rs.iter().all(|r| r["connected"] == true))
            })
            .unwrap_or(false)
    }
}
