//! TLS, plaintext policy, HTTP endpoints, per-IP limits, the systemd unit.

use std::process::Command;
use std::sync::Arc;

use sotto_protocol::relay::{Request, Response};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::client::{Client, Device};
use crate::harness::{Relay, bin};

#[test]
fn plain_ws_on_a_non_loopback_address_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(bin())
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run relay");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to serve plain ws"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("params");
    let cert = params.signed_by(&key, &issuer).expect("cert");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");

    let relay = Relay::start_with(&[
        "--tls-cert",
        cert_path.to_str().expect("utf8"),
        "--tls-key",
        key_path.to_str().expect("utf8"),
    ]);
    assert!(relay.url.starts_with("wss://127.0.0.1:"), "{}", relay.url);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(relay.addr)
        .await
        .expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector.connect(name, tcp).await.expect("tls handshake");
    let mut c = Client::over(Box::new(tls), &relay.url).await;
    assert_eq!(c.hello.relay_url, relay.url);
    let alice = Device::new(&relay.address("alice"));
    assert!(matches!(
        c.try_auth(&alice, true).await,
        Ok(Response::Authenticated { local: true })
    ));
    c.ping_ok().await;

    // Plain WebSocket to the TLS port does not get through.
    let tcp = tokio::net::TcpStream::connect(relay.addr)
        .await
        .expect("tcp");
    let url = format!("ws://{}/sotto/v1", relay.addr);
    let plain = tokio::time::timeout(
        crate::harness::DEADLINE,
        tokio_tungstenite::client_async(url, tcp),
    )
    .await
    .expect("plain attempt finishes");
    assert!(plain.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_version_paths() {
    let relay = Relay::start();
    let (status, body) = relay.http_get("/healthz");
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");
    let (status, body) = relay.http_get("/sotto/v2");
    assert!(status.contains("404"), "{status}");
    assert!(body.contains("wire versions 2 to 2 at /sotto/v1"), "{body}");
    let (status, _) = relay.http_get("/sotto/v1");
    assert!(status.contains("426"), "{status}");

    let frames_in = relay.metric("sotto_relay_frames_in_total");
    let conns = relay.metric("sotto_relay_connections_total");
    let stored = relay.metric("sotto_relay_mailbox_entries_stored_total");
    let alice = Device::new(&relay.address("alice"));
    let mut c = Client::registered(relay.addr, &alice).await;
    let r = c
        .request(Request::PostMailbox {
            post_id: crate::client::post_id(),
            recipients: vec![alice.device_ref()],
            payload: b"note to self".to_vec(),
        })
        .await;
    assert!(matches!(r, Ok(Response::Posted { .. })));
    assert_eq!(relay.metric("sotto_relay_connections"), 1);
    assert!(relay.metric("sotto_relay_frames_in_total") >= frames_in + 2);
    assert!(relay.metric("sotto_relay_frames_out_total") >= 3);
    assert_eq!(relay.metric("sotto_relay_connections_total"), conns + 1);
    assert_eq!(
        relay.metric("sotto_relay_mailbox_entries_stored_total"),
        stored + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_ip_honour_only_the_trusted_proxy() {
    let relay = Relay::start_with(&[
        "--connections-per-ip",
        "2",
        "--trusted-proxy",
        "127.0.0.1/32",
    ]);
    let open = |xff: &'static str| {
        let addr = relay.addr;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
            let mut req = format!("ws://{addr}/sotto/v1")
                .into_client_request()
                .expect("request");
            req.headers_mut()
                .insert("x-forwarded-for", xff.parse().expect("header"));
            tokio_tungstenite::client_async(req, tcp).await
        }
    };
    let a1 = open("192.0.2.1").await.expect("first");
    let a2 = open("198.51.100.7, 192.0.2.1").await.expect("second");
    let refused = open("192.0.2.1").await;
    assert!(
        refused.is_err(),
        "a third connection from 192.0.2.1 is refused"
    );
    let other = open("192.0.2.2").await.expect("another client address");
    drop((a1, a2, other));

    // Without a trusted proxy the header is ignored: every connection counts for 127.0.0.1.
    let direct = Relay::start_with(&["--connections-per-ip", "1"]);
    let tcp = tokio::net::TcpStream::connect(direct.addr)
        .await
        .expect("tcp");
    let first = tokio_tungstenite::client_async(format!("ws://{}/sotto/v1", direct.addr), tcp)
        .await
        .expect("first");
    let tcp = tokio::net::TcpStream::connect(direct.addr)
        .await
        .expect("tcp");
    let mut req = format!("ws://{}/sotto/v1", direct.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("x-forwarded-for", "192.0.2.10".parse().expect("header"));
    assert!(tokio_tungstenite::client_async(req, tcp).await.is_err());
    drop(first);
}

#[test]
fn systemd_unit_verifies() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipping: systemd-analyze is not installed");
        return;
    };
    if !probe.status.success() {
        eprintln!("skipping: systemd-analyze does not run here");
        return;
    }
    let unit = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../contrib/systemd/sotto-relay.service"
    );
    let text = std::fs::read_to_string(unit).expect("read unit");
    let dir = tempfile::tempdir().expect("tmp");
    let patched: String = text
        .lines()
        .map(|l| {
            if let Some(rest) = l.strip_prefix("ExecStart=") {
                let args = rest.split_once(' ').map_or("", |(_, a)| a);
                format!("ExecStart={} {args}\n", bin())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let copy = dir.path().join("sotto-relay.service");
    std::fs::write(&copy, patched).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    assert!(
        !stderr.contains("sotto-relay.service:"),
        "warnings:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_unauthenticated_connections_time_out() {
    use tokio::io::AsyncReadExt;
    // Short enough to wait out, long enough that the connections meant to get through
    // (an upgrade; a registration, a disk write, within the auth timeout) do so on a
    // loaded machine too.
    let relay = Relay::start_with(&[
        "--handshake-timeout-ms",
        "2000",
        "--auth-timeout-ms",
        "10000",
    ]);
    // A TCP connection that never sends a request head is dropped.
    let mut tcp = tokio::net::TcpStream::connect(relay.addr)
        .await
        .expect("tcp");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(crate::harness::DEADLINE, tcp.read(&mut buf))
        .await
        .expect("closed before the deadline")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // An upgraded connection that never authenticates is closed with a reason.
    let mut c = Client::connect(relay.addr).await;
    let close = c.closed().await.expect("close frame");
    assert_eq!(close.reason.as_str(), "authentication timeout");
    // An authenticated connection is not subject to it.
    let alice = Device::new(&relay.address("alice"));
    let mut a = Client::registered(relay.addr, &alice).await;
    a.ping_ok().await;
    assert!(relay.metric("sotto_relay_rejections_total{reason=\"handshake_timeout\"}") >= 1);
    assert!(relay.metric("sotto_relay_rejections_total{reason=\"auth_timeout\"}") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_connections_and_exits_cleanly() {
    let mut relay = Relay::start();
    let alice = Device::new(&relay.address("alice"));
    let mut a = Client::registered(relay.addr, &alice).await;
    let status = Command::new("kill")
        .args(["-TERM", &relay.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let close = a.closed().await.expect("close frame");
    assert_eq!(close.reason.as_str(), "relay shutting down");
    let code = relay.wait();
    assert_eq!(code, Some(0));
}
