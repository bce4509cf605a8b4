//! Hostile input: each bad connection gets its error, everyone else keeps working.

use sotto_protocol::relay::{
    ClientFrame, MIN_FRAME_VERSION, RelayErrorKind, Request, Response, ServerFrame, WIRE_VERSION,
};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Client, Device, Incoming, encode, kind, post_id};
use crate::harness::Relay;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_connection() {
    let relay = Relay::start_with(&["--max-frame-bytes", "65536", "--rate", "1", "--burst", "10"]);
    let alice = Device::new(&relay.address("alice"));
    let mut good = Client::registered(relay.addr, &alice).await;

    // Oversized, just past the limit.
    let mut c = Client::connect(relay.addr).await;
    let mut big = vec![WIRE_VERSION];
    big.resize(70_000, 0);
    c.send_bytes(big).await;
    assert_eq!(
        c.fatal().await.kind,
        RelayErrorKind::TooLarge { max_bytes: 65536 }
    );
    c.closed().await;
    good.ping_ok().await;

    // Far past the limit: the WebSocket layer refuses it.
    let mut c = Client::connect(relay.addr).await;
    c.send_bytes(vec![WIRE_VERSION; 300_000]).await;
    match c.recv().await {
        Incoming::Frame(ServerFrame::Fatal(e)) => {
            assert!(matches!(e.kind, RelayErrorKind::TooLarge { .. }));
        }
        Incoming::Closed(_) => {}
        other => panic!("oversized: {other:?}"),
    }
    good.ping_ok().await;

    // Garbage after the version byte.
    let mut c = Client::connect(relay.addr).await;
    c.send_bytes(vec![WIRE_VERSION, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
        .await;
    assert_eq!(c.fatal().await.kind, RelayErrorKind::Malformed);
    c.closed().await;

    // A newer client: told exactly what is wrong, in the frame and in the close reason.
    let mut c = Client::connect(relay.addr).await;
    let mut newer = encode(&ClientFrame {
        id: 1,
        request: Request::Ping,
    });
    newer[0] = WIRE_VERSION + 1;
    c.send_bytes(newer).await;
    let e = c.fatal().await;
    assert_eq!(
        e.kind,
        RelayErrorKind::UnsupportedVersion {
            min: MIN_FRAME_VERSION,
            max: WIRE_VERSION
        }
    );
    assert!(e.message.contains("newer"), "{}", e.message);
    let close = c.closed().await.expect("close frame");
    assert!(
        close.reason.contains("unsupported_version"),
        "{}",
        close.reason
    );

    // An older (version 1) client, whose authentication cannot prove its install: its
    // frame would decode, but the version byte is checked first and it is told to upgrade.
    let mut c = Client::connect(relay.addr).await;
    assert_eq!(c.hello.min_version, MIN_FRAME_VERSION);
    assert_eq!(MIN_FRAME_VERSION, 2);
    let mut older = encode(&ClientFrame {
        id: 1,
        request: Request::Ping,
    });
    older[0] = 1;
    c.send_bytes(older).await;
    let e = c.fatal().await;
    assert_eq!(
        e.kind,
        RelayErrorKind::UnsupportedVersion {
            min: MIN_FRAME_VERSION,
            max: WIRE_VERSION
        }
    );
    assert!(e.message.contains("too old"), "{}", e.message);
    let close = c.closed().await.expect("close frame");
    assert!(close.reason.contains("upgrade"), "{}", close.reason);

    // Text frames are not the protocol.
    let mut c = Client::connect(relay.addr).await;
    c.send_message(Message::text("{\"hello\":1}")).await;
    assert_eq!(c.fatal().await.kind, RelayErrorKind::Malformed);

    // The wrong frame before authentication: refused, and the connection may still log in.
    let mut c = Client::connect(relay.addr).await;
    let r = c
        .request(Request::PostGroup {
            post_id: post_id(),
            group_id: b"g".to_vec(),
            message: vec![0; 10],
            added: vec![],
            removed: vec![],
        })
        .await;
    assert_eq!(kind(r), RelayErrorKind::Unauthenticated);
    assert!(matches!(
        c.try_auth(&alice, false).await,
        Ok(Response::Authenticated { .. })
    ));

    // A flood past the rate limit.
    let mut f = Client::connect(relay.addr).await;
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(f.send(Request::Ping).await);
    }
    let mut limited = 0;
    for id in ids {
        match f.response(id).await {
            Ok(Response::Pong) => {}
            Err(e) => {
                assert!(
                    matches!(e.kind, RelayErrorKind::RateLimited { retry_after_ms } if retry_after_ms > 0)
                );
                limited += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(limited >= 10, "only {limited} of 40 were limited");
    good.ping_ok().await;

    let m = |r: &str| relay.metric(&format!("sotto_relay_rejections_total{{reason=\"{r}\"}}"));
    assert!(m("malformed") >= 2);
    assert!(m("too_large") >= 1);
    assert!(m("rate_limited") >= 10);
    assert!(m("unauthenticated") >= 1);
    assert!(m("unsupported_version") >= 1);
}
