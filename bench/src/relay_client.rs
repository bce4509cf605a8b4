//! A raw relay-protocol client (WebSocket, one version byte + postcard) and the device
//! identities it authenticates as, with openmls key packages built the way sottod's are.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use ed25519_dalek::Signer as _;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use sotto_protocol::relay::{
    ClientFrame, DeviceRef, Hello, Principal, Push, Request, Response, ServerFrame, auth_message,
    credential_identity,
};
use sotto_protocol::wire;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// How long one relay answer may take.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// A device: Ed25519 key (also the MLS signer), address, and an in-memory MLS provider.
pub struct Device {
    pub address: String,
    pub device_id: String,
    pub signer: SignatureKeyPair,
    sk: ed25519_dalek::SigningKey,
    pub provider: OpenMlsRustCrypto,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({}/{})", self.address, self.device_id)
    }
}

impl Device {
    pub fn new(address: &str) -> Device {
        let sk = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let signer = SignatureKeyPair::from_raw(
            SignatureScheme::ED25519,
            sk.to_bytes().to_vec(),
            sk.verifying_key().to_bytes().to_vec(),
        );
        Device {
            address: address.to_owned(),
            device_id: "d1".to_owned(),
            signer,
            sk,
            provider: OpenMlsRustCrypto::default(),
        }
    }

    pub fn key(&self) -> Principal {
        self.sk.verifying_key().to_bytes()
    }

    pub fn device_ref(&self) -> DeviceRef {
        DeviceRef {
            address: self.address.clone(),
            device_id: self.device_id.clone(),
        }
    }

    pub fn credential(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(
                credential_identity(&self.address, &self.device_id).into_bytes(),
            )
            .into(),
            signature_key: self.signer.public().into(),
        }
    }

    /// A key package with sottod's capabilities (so sottod's groups accept it).
    pub fn key_package(&self) -> anyhow::Result<Vec<u8>> {
        let bundle = KeyPackage::builder()
            .leaf_node_capabilities(sottod::mls::capabilities())
            .build(
                sottod::mls::DEFAULT_CIPHERSUITE,
                &self.provider,
                &self.signer,
                self.credential(),
            )?;
        Ok(bundle.key_package().tls_serialize_detached()?)
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.sk.sign(msg).to_bytes().to_vec()
    }
}

type Ws = WebSocketStream<TcpStream>;

/// A connection speaking the relay protocol.
#[derive(Debug)]
pub struct Client {
    ws: Ws,
    pub hello: Hello,
    next_id: u64,
    pushes: VecDeque<Push>,
}

/// Connects a WebSocket to `ws://addr/path` with TCP_NODELAY.
pub async fn ws_connect(addr: SocketAddr, path: &str) -> anyhow::Result<Ws> {
    let tcp = TcpStream::connect(addr).await.context("tcp connect")?;
    tcp.set_nodelay(true)?;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), tcp)
        .await
        .context("websocket upgrade")?;
    Ok(ws)
}

fn decode(msg: Message) -> anyhow::Result<Option<ServerFrame>> {
    match msg {
        Message::Binary(b) => Ok(Some(wire::decode(&b)?)),
        Message::Close(f) => bail!("the relay closed the connection: {f:?}"),
        _ => Ok(None),
    }
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Client> {
        let ws = ws_connect(addr, sotto_protocol::relay::WS_PATH).await?;
        let mut c = Client {
            ws,
            hello: Hello {
                min_version: 0,
                max_version: 0,
                relay_url: String::new(),
                nonce: [0; 32],
                max_frame_bytes: 0,
                server: String::new(),
            },
            next_id: 0,
            pushes: VecDeque::new(),
        };
        match c.recv().await? {
            ServerFrame::Hello(h) => c.hello = h,
            other => bail!("expected hello, got {other:?}"),
        }
        Ok(c)
    }

    /// Connects and registers `dev` (a local account) or authenticates it (foreign).
    pub async fn authed(addr: SocketAddr, dev: &Device, register: bool) -> anyhow::Result<Client> {
        let mut c = Client::connect(addr).await?;
        let (address, device_id, public_key) =
            (dev.address.clone(), dev.device_id.clone(), dev.key());
        // One install per device: its id is derived from its key.
        let mut install_id = [0u8; 16];
        install_id.copy_from_slice(&public_key[..16]);
        let sig = dev.sign(&auth_message(
            &c.hello.relay_url,
            &c.hello.nonce,
            &dev.address,
            &dev.device_id,
            &install_id,
            false,
        ));
        let req = if register {
            Request::Register {
                address,
                device_id,
                public_key,
                install_id,
                take_over: false,
                signature: sig,
            }
        } else {
            Request::Authenticate {
                address,
                device_id,
                public_key,
                install_id,
                take_over: false,
                signature: sig,
            }
        };
        match c.request(req).await? {
            Response::Authenticated { .. } => Ok(c),
            other => bail!("authentication: {other:?}"),
        }
    }

    async fn recv(&mut self) -> anyhow::Result<ServerFrame> {
        loop {
            let msg = tokio::time::timeout(REPLY_TIMEOUT, self.ws.next())
                .await
                .context("no frame from the relay in time")?
                .context("the relay closed the connection")??;
            if let Some(f) = decode(msg)? {
                return Ok(f);
            }
        }
    }

    /// Sends a request without waiting; returns its id.
    pub async fn send(&mut self, request: Request) -> anyhow::Result<u64> {
        self.next_id += 1;
        let id = self.next_id;
        let bytes = wire::encode(&ClientFrame { id, request });
        self.ws.send(Message::binary(bytes)).await?;
        Ok(id)
    }

    /// Waits for the response to `id`, queueing pushes.
    pub async fn response(&mut self, id: u64) -> anyhow::Result<Response> {
        loop {
            match self.recv().await? {
                ServerFrame::Response { id: got, result } if got == id => {
                    return result.map_err(|e| anyhow::anyhow!("relay refused: {e:?}"));
                }
                ServerFrame::Push(p) => self.pushes.push_back(p),
                ServerFrame::Fatal(e) => bail!("relay fatal: {e:?}"),
                _ => {}
            }
        }
    }

    pub async fn request(&mut self, request: Request) -> anyhow::Result<Response> {
        let id = self.send(request).await?;
        self.response(id).await
    }

    /// The next push (queued or new).
    pub async fn push(&mut self) -> anyhow::Result<Push> {
        if let Some(p) = self.pushes.pop_front() {
            return Ok(p);
        }
        loop {
            match self.recv().await? {
                ServerFrame::Push(p) => return Ok(p),
                ServerFrame::Fatal(e) => bail!("relay fatal: {e:?}"),
                _ => {}
            }
        }
    }

    /// Splits into a request sender and a frame receiver for pipelining.
    pub fn split(self) -> (Sender, Receiver) {
        let (sink, stream) = self.ws.split();
        (
            Sender {
                sink,
                next_id: self.next_id,
            },
            Receiver { stream },
        )
    }
}

/// The sending half of a split client.
#[derive(Debug)]
pub struct Sender {
    sink: SplitSink<Ws, Message>,
    next_id: u64,
}

impl Sender {
    pub async fn send(&mut self, request: Request) -> anyhow::Result<u64> {
        self.next_id += 1;
        let id = self.next_id;
        self.sink
            .send(Message::binary(wire::encode(&ClientFrame { id, request })))
            .await?;
        Ok(id)
    }
}

/// The receiving half of a split client.
#[derive(Debug)]
pub struct Receiver {
    stream: SplitStream<Ws>,
}

impl Receiver {
    pub async fn next(&mut self) -> anyhow::Result<ServerFrame> {
        loop {
            let msg = tokio::time::timeout(REPLY_TIMEOUT, self.stream.next())
                .await
                .context("no frame from the relay in time")?
                .context("the relay closed the connection")??;
            if let Some(f) = decode(msg)? {
                return Ok(f);
            }
        }
    }
}

/// A post id as sottod makes them: time-ordered (`sottod::clock::ordered_id`, a UUIDv7),
/// so the relay's idempotency index grows at one edge as it does for real senders.
pub fn post_id() -> [u8; 16] {
    sottod::clock::ordered_id()
}

/// Registers `n` raw members on `relay` (named `{prefix}<random tag>-{i}`, 32 at a time),
/// each publishing one key package of sottod's default suite; returns each device with its
/// connection, in order.
pub async fn members_with_key_packages(
    relay: &crate::procs::Relay,
    prefix: &str,
    n: usize,
) -> anyhow::Result<Vec<(Device, Client)>> {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let tag: u32 = rand::random();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let dev = Device::new(&relay.address(&format!("{prefix}{tag:x}-{i}")));
        let (gate, addr) = (gate.clone(), relay.addr);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await?;
            let mut c = Client::authed(addr, &dev, true).await?;
            let r = c
                .request(Request::PublishKeyPackages {
                    ciphersuite: u16::from(sottod::mls::DEFAULT_CIPHERSUITE),
                    key_packages: vec![dev.key_package()?],
                    last_resort: None,
                })
                .await?;
            anyhow::ensure!(
                matches!(r, Response::Ok | Response::KeyPackageCount(_)),
                "publish: {r:?}"
            );
            Ok::<_, anyhow::Error>((dev, c))
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}
