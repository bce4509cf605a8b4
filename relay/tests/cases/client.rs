//! A raw protocol client: WebSocket, the version byte, postcard, request ids.

use std::collections::VecDeque;
use std::net::SocketAddr;

use ed25519_dalek::Signer as _;
use futures_util::{SinkExt, StreamExt};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use rand::RngCore;
use sotto_protocol::relay::{
    ClientFrame, DeviceRef, GroupEntry, Hello, InstallId, PostId, Principal, Push, RelayError,
    RelayErrorKind, Request, Response, ServerFrame, WIRE_VERSION, auth_message,
    credential_identity,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::harness::DEADLINE;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A device: its Ed25519 key (also the MLS signer), its address and its MLS provider.
pub struct Device {
    pub address: String,
    pub device_id: String,
    pub signer: SignatureKeyPair,
    sk: ed25519_dalek::SigningKey,
    pub provider: OpenMlsRustCrypto,
    /// This install of the device (random per `Device`; a `twin` is another install).
    pub install_id: InstallId,
    /// Whether its authentications take the device over.
    pub take_over: bool,
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
            install_id: rand::random(),
            take_over: false,
        }
    }

    /// The same identity, key and install with a fresh (empty) MLS store.
    pub fn twin(&self) -> Device {
        Device {
            address: self.address.clone(),
            device_id: self.device_id.clone(),
            signer: SignatureKeyPair::from_raw(
                SignatureScheme::ED25519,
                self.sk.to_bytes().to_vec(),
                self.sk.verifying_key().to_bytes().to_vec(),
            ),
            sk: self.sk.clone(),
            provider: OpenMlsRustCrypto::default(),
            install_id: self.install_id,
            take_over: self.take_over,
        }
    }

    /// Another install of the same device (a restored backup), taking it over.
    pub fn restored(&self) -> Device {
        Device {
            install_id: rand::random(),
            take_over: true,
            ..self.twin()
        }
    }

    pub fn key(&self) -> Principal {
        self.signer.public().try_into().expect("32-byte key")
    }

    pub fn device_ref(&self) -> DeviceRef {
        DeviceRef {
            address: self.address.clone(),
            device_id: self.device_id.clone(),
        }
    }

    pub fn identity(&self) -> String {
        credential_identity(&self.address, &self.device_id)
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.sk.sign(msg).to_bytes().to_vec()
    }

    /// The proof message for this device and install.
    pub fn auth_message(&self, relay_url: &str, nonce: &[u8; 32]) -> Vec<u8> {
        auth_message(
            relay_url,
            nonce,
            &self.address,
            &self.device_id,
            &self.install_id,
            self.take_over,
        )
    }

    pub fn credential(&self) -> CredentialWithKey {
        self.credential_named(&self.identity())
    }

    pub fn credential_named(&self, identity: &str) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(identity.as_bytes().to_vec()).into(),
            signature_key: self.signer.public().into(),
        }
    }
}

pub fn post_id() -> PostId {
    let mut id = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut id);
    id
}

pub fn encode(frame: &ClientFrame) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    out.extend(postcard::to_stdvec(frame).expect("encode"));
    out
}

fn decode(bytes: &[u8]) -> ServerFrame {
    assert_eq!(bytes.first(), Some(&WIRE_VERSION), "server frame version");
    postcard::from_bytes(&bytes[1..]).expect("decodable server frame")
}

/// What arrived.
#[derive(Debug)]
pub enum Incoming {
    Frame(ServerFrame),
    Closed(Option<CloseFrame>),
}

pub struct Client {
    ws: WebSocketStream<Box<dyn Io>>,
    pub hello: Hello,
    nonce: Option<[u8; 32]>,
    next_id: u64,
    pushes: VecDeque<Push>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("tcp connect");
        let url = format!("ws://{addr}/sotto/v1");
        Client::over(Box::new(tcp), &url).await
    }

    pub async fn over(stream: Box<dyn Io>, url: &str) -> Client {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let req = url.into_client_request().expect("request");
        Client::over_request(stream, req).await
    }

    pub async fn over_request(
        stream: Box<dyn Io>,
        req: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Client {
        Client::try_over_request(stream, req)
            .await
            .expect("websocket upgrade")
    }

    /// Connects, or returns why the relay refused the TCP connection or the upgrade.
    pub async fn try_connect(addr: SocketAddr) -> Result<Client, String> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("tcp connect: {e}"))?;
        let req = format!("ws://{addr}/sotto/v1")
            .into_client_request()
            .expect("request");
        Client::try_over_request(Box::new(tcp), req)
            .await
            .map_err(|e| format!("websocket upgrade: {e}"))
    }

    pub async fn try_over_request(
        stream: Box<dyn Io>,
        req: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let (ws, _) = tokio_tungstenite::client_async(req, stream).await?;
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
            nonce: None,
            next_id: 0,
            pushes: VecDeque::new(),
        };
        match c.recv().await {
            Incoming::Frame(ServerFrame::Hello(h)) => {
                c.nonce = Some(h.nonce);
                c.hello = h;
            }
            other => panic!("expected hello, got {other:?}"),
        }
        Ok(c)
    }

    pub async fn recv(&mut self) -> Incoming {
        loop {
            let msg = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("no frame from relay before the deadline");
            match msg {
                None => return Incoming::Closed(None),
                Some(Err(_)) => return Incoming::Closed(None),
                Some(Ok(Message::Binary(b))) => return Incoming::Frame(decode(&b)),
                Some(Ok(Message::Close(f))) => return Incoming::Closed(f),
                Some(Ok(_)) => {}
            }
        }
    }

    pub async fn send_bytes(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::binary(bytes))
            .await
            .expect("send frame");
    }

    pub async fn send_message(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send message");
    }

    /// Sends a request without waiting; returns its id.
    pub async fn send(&mut self, request: Request) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.send_bytes(encode(&ClientFrame { id, request })).await;
        id
    }

    /// Sends a request without waiting; its id, or `None` when the connection is gone
    /// (the relay was killed).
    pub async fn try_send(&mut self, request: Request) -> Option<u64> {
        self.next_id += 1;
        let id = self.next_id;
        let frame = encode(&ClientFrame { id, request });
        self.ws.send(Message::binary(frame)).await.ok()?;
        Some(id)
    }

    /// Waits for the response to `id`, queueing pushes.
    pub async fn response(&mut self, id: u64) -> Result<Response, RelayError> {
        loop {
            match self.recv().await {
                Incoming::Frame(ServerFrame::Response { id: got, result }) if got == id => {
                    return result;
                }
                Incoming::Frame(ServerFrame::Response { id: got, .. }) => {
                    panic!("response to {got} while waiting for {id}")
                }
                Incoming::Frame(ServerFrame::Push(p)) => self.pushes.push_back(p),
                other => panic!("while waiting for response {id}: {other:?}"),
            }
        }
    }

    pub async fn request(&mut self, request: Request) -> Result<Response, RelayError> {
        let id = self.send(request).await;
        self.response(id).await
    }

    /// The group's whole stored log, read page by page from the start.
    pub async fn read_whole_group(&mut self, group_id: &[u8]) -> Vec<GroupEntry> {
        let mut stored = Vec::new();
        loop {
            let r = self
                .request(Request::ReadGroup {
                    group_id: group_id.to_vec(),
                    after: stored.len() as u64,
                    limit: 256,
                })
                .await;
            let Ok(Response::GroupEntries { entries, .. }) = r else {
                panic!("read: {r:?}")
            };
            if entries.is_empty() {
                return stored;
            }
            stored.extend(entries);
        }
    }

    /// Subscribes to `dev`'s mailbox from `after`; the relay must accept.
    pub async fn subscribe_mailbox(&mut self, dev: &Device, after: u64) {
        let r = self
            .request(Request::SubscribeMailbox {
                device: dev.device_ref(),
                after,
            })
            .await;
        assert_eq!(r, Ok(Response::Ok), "subscribe to the mailbox");
    }

    /// The next push (queued or new).
    pub async fn push(&mut self) -> Push {
        if let Some(p) = self.pushes.pop_front() {
            return p;
        }
        match self.recv().await {
            Incoming::Frame(ServerFrame::Push(p)) => p,
            other => panic!("expected a push, got {other:?}"),
        }
    }

    /// Drains the pushes queued while waiting for responses.
    pub fn queued(&mut self) -> Vec<Push> {
        self.pushes.drain(..).collect()
    }

    /// Waits for a connection-level error and the close.
    pub async fn fatal(&mut self) -> RelayError {
        loop {
            match self.recv().await {
                Incoming::Frame(ServerFrame::Fatal(e)) => return e,
                Incoming::Frame(ServerFrame::Response { .. } | ServerFrame::Push(_)) => {}
                other => panic!("expected a fatal error, got {other:?}"),
            }
        }
    }

    /// Reads until the relay closes the connection.
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        loop {
            if let Incoming::Closed(f) = self.recv().await {
                return f;
            }
        }
    }

    pub async fn nonce(&mut self) -> [u8; 32] {
        if let Some(n) = self.nonce.take() {
            return n;
        }
        match self.request(Request::Challenge).await {
            Ok(Response::Challenge { nonce }) => nonce,
            other => panic!("challenge: {other:?}"),
        }
    }

    /// The signed proof for `dev` over this connection's challenge.
    pub async fn proof(&mut self, dev: &Device) -> Vec<u8> {
        let nonce = self.nonce().await;
        dev.sign(&dev.auth_message(&self.hello.relay_url, &nonce))
    }

    pub fn auth_request(dev: &Device, signature: Vec<u8>, register: bool) -> Request {
        let (address, device_id, public_key) =
            (dev.address.clone(), dev.device_id.clone(), dev.key());
        let (install_id, take_over) = (dev.install_id, dev.take_over);
        if register {
            Request::Register {
                address,
                device_id,
                public_key,
                install_id,
                take_over,
                signature,
            }
        } else {
            Request::Authenticate {
                address,
                device_id,
                public_key,
                install_id,
                take_over,
                signature,
            }
        }
    }

    pub async fn try_auth(&mut self, dev: &Device, register: bool) -> Result<Response, RelayError> {
        let signature = self.proof(dev).await;
        self.request(Client::auth_request(dev, signature, register))
            .await
    }

    /// Connects and registers (or authenticates, if already registered).
    pub async fn registered(addr: SocketAddr, dev: &Device) -> Client {
        let mut c = Client::connect(addr).await;
        let r = c.try_auth(dev, true).await;
        assert!(
            matches!(r, Ok(Response::Authenticated { local: true })),
            "{r:?}"
        );
        c
    }

    /// Connects and authenticates (a foreign principal if the address is elsewhere).
    pub async fn authenticated(addr: SocketAddr, dev: &Device) -> Client {
        let mut c = Client::connect(addr).await;
        let r = c.try_auth(dev, false).await;
        assert!(matches!(r, Ok(Response::Authenticated { .. })), "{r:?}");
        c
    }

    pub async fn ping_ok(&mut self) {
        assert_eq!(self.request(Request::Ping).await, Ok(Response::Pong));
    }
}

pub fn kind(r: Result<Response, RelayError>) -> RelayErrorKind {
    match r {
        Err(e) => e.kind,
        Ok(ok) => panic!("expected an error, got {ok:?}"),
    }
}
