//! A raw relay-protocol member for tests that need many group members: an Ed25519 device
//! with an in-memory openmls provider, speaking WebSocket + postcard to a real relay. Used
//! where N real daemons do not fit on 2 cores; the daemon under test is always real.

use std::time::Duration;

use ed25519_dalek::Signer as _;
use futures_util::{SinkExt as _, StreamExt as _};
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use sotto_protocol::relay::{
    ClientFrame, DeviceRef, Hello, MailboxPayload, Push, RelayError, Request, Response,
    ServerFrame, WS_PATH, WelcomeEnvelope, auth_message, credential_identity,
};
use sotto_protocol::wire;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// How long one relay answer may take on a loaded machine.
const REPLY: Duration = Duration::from_secs(120);

/// A member device: its key (also the MLS signer), address and MLS provider.
pub struct Member {
    pub address: String,
    pub device_id: String,
    pub signer: SignatureKeyPair,
    sk: ed25519_dalek::SigningKey,
    pub provider: OpenMlsRustCrypto,
}

impl Member {
    pub fn new(address: &str) -> Member {
        let sk = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let signer = SignatureKeyPair::from_raw(
            SignatureScheme::ED25519,
            sk.to_bytes().to_vec(),
            sk.verifying_key().to_bytes().to_vec(),
        );
        Member {
            address: address.to_owned(),
            device_id: "d1".to_owned(),
            signer,
            sk,
            provider: OpenMlsRustCrypto::default(),
        }
    }

    pub fn device_ref(&self) -> DeviceRef {
        DeviceRef {
            address: self.address.clone(),
            device_id: self.device_id.clone(),
        }
    }

    /// A key package in `suite` with sottod's capabilities (so its groups accept it).
    pub fn key_package(&self, suite: Ciphersuite) -> Vec<u8> {
        let credential = CredentialWithKey {
            credential: BasicCredential::new(
                credential_identity(&self.address, &self.device_id).into_bytes(),
            )
            .into(),
            signature_key: self.signer.public().into(),
        };
        KeyPackage::builder()
            .leaf_node_capabilities(sottod::mls::capabilities())
            .build(suite, &self.provider, &self.signer, credential)
            .expect("key package")
            .key_package()
            .tls_serialize_detached()
            .expect("encode key package")
    }
}

/// One authenticated connection.
pub struct Conn {
    ws: WebSocketStream<TcpStream>,
    next_id: u64,
    pushes: Vec<Push>,
}

impl Conn {
    /// Connects to `host:port` and registers `m` (its address must be on that relay).
    pub async fn register(host: &str, m: &Member) -> Conn {
        let tcp = TcpStream::connect(host).await.expect("tcp connect");
        let (ws, _) = tokio_tungstenite::client_async(format!("ws://{host}{WS_PATH}"), tcp)
            .await
            .expect("websocket");
        let mut c = Conn {
            ws,
            next_id: 0,
            pushes: Vec::new(),
        };
        let hello: Hello = match c.frame().await {
            ServerFrame::Hello(h) => h,
            other => panic!("expected hello, got {other:?}"),
        };
        // One install per member: its id is derived from its key.
        let public_key = m.sk.verifying_key().to_bytes();
        let mut install_id = [0u8; 16];
        install_id.copy_from_slice(&public_key[..16]);
        let signature =
            m.sk.sign(&auth_message(
                &hello.relay_url,
                &hello.nonce,
                &m.address,
                &m.device_id,
                &install_id,
                false,
            ))
            .to_bytes()
            .to_vec();
        let r = c
            .request(Request::Register {
                address: m.address.clone(),
                device_id: m.device_id.clone(),
                public_key,
                install_id,
                take_over: false,
                signature,
            })
            .await;
        assert!(matches!(r, Ok(Response::Authenticated { .. })), "{r:?}");
        c
    }

    async fn frame(&mut self) -> ServerFrame {
        loop {
            let msg = tokio::time::timeout(REPLY, self.ws.next())
                .await
                .expect("a frame from the relay in time")
                .expect("the relay closed the connection")
                .expect("websocket error");
            if let Message::Binary(b) = msg {
                return wire::decode(&b).expect("a relay frame");
            }
        }
    }

    pub async fn request(&mut self, request: Request) -> Result<Response, RelayError> {
        self.next_id += 1;
        let id = self.next_id;
        self.ws
            .send(Message::binary(wire::encode(&ClientFrame { id, request })))
            .await
            .expect("send");
        loop {
            match self.frame().await {
                ServerFrame::Response { id: got, result } if got == id => return result,
                ServerFrame::Push(p) => self.pushes.push(p),
                _ => {}
            }
        }
    }

    /// The next push (queued first).
    pub async fn push(&mut self) -> Push {
        if !self.pushes.is_empty() {
            return self.pushes.remove(0);
        }
        loop {
            if let ServerFrame::Push(p) = self.frame().await {
                return p;
            }
        }
    }

    /// Subscribes to `m`'s mailbox, waits for the Welcome pushed there and joins its
    /// group as `m`: the envelope and the joined group.
    pub async fn join_from_welcome(&mut self, m: &Member) -> (WelcomeEnvelope, MlsGroup) {
        use openmls::prelude::tls_codec::Deserialize as _;
        let r = self
            .request(Request::SubscribeMailbox {
                device: m.device_ref(),
                after: 0,
            })
            .await;
        assert!(matches!(r, Ok(Response::Ok)), "{r:?}");
        let env = loop {
            if let Push::Mailbox { entries } = self.push().await {
                let payload: MailboxPayload =
                    wire::decode(&entries[0].payload).expect("a mailbox payload");
                let MailboxPayload::Welcome(env) = payload else {
                    panic!("not a Welcome")
                };
                break env;
            }
        };
        let MlsMessageBodyIn::Welcome(w) = MlsMessageIn::tls_deserialize_exact(&env.welcome)
            .expect("an MLS message")
            .extract()
        else {
            panic!("not a Welcome");
        };
        let group =
            StagedWelcome::new_from_welcome(&m.provider, &sottod::mls::join_config(), w, None)
                .expect("stage the Welcome")
                .into_group(&m.provider)
                .expect("join");
        (env, group)
    }
}

/// Runs `f` on a fresh current-thread runtime (the tests themselves are synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}
