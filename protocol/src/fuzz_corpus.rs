//! Replays every kept fuzz input (`fuzz/corpus/<target>/` and the crashers kept as
//! regressions in `fuzz/regressions/<target>/`) through the fuzz targets' bodies, on
//! stable Rust in every `cargo test`. The bodies are `fuzz/src/lib.rs`, compiled here too.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod bodies;

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

#[test]
fn every_kept_fuzz_input_replays_cleanly() {
    let mut replayed = 0;
    for (name, body) in bodies::TARGETS {
        let mut per_target = 0;
        for dir in ["corpus", "regressions"] {
            let d = fuzz_dir().join(dir).join(name);
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let bytes = std::fs::read(&path).expect("read a kept input");
                let outcome = std::panic::catch_unwind(|| body(&bytes));
                assert!(outcome.is_ok(), "{name}: {} fails", path.display());
                per_target += 1;
            }
        }
        assert!(
            per_target > 0,
            "{name} has no kept inputs under fuzz/corpus"
        );
        replayed += per_target;
    }
    eprintln!("replayed {replayed} kept fuzz inputs");
}

/// Writes the seed inputs of `fuzz/corpus` (run once by hand:
/// `cargo test -p sotto-protocol write_fuzz_seeds -- --ignored`).
#[test]
#[ignore = "writes the seed corpus"]
fn write_fuzz_seeds() {
    use crate::envelope::Envelope;
    use crate::relay::{ClientFrame, DeviceRef, MailboxPayload, Request, WelcomeEnvelope};
    use crate::wire;
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let d = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join(name), bytes).expect("write seed");
    };
    let dev = DeviceRef {
        address: "bob@relay.example".into(),
        device_id: "d1".into(),
    };
    let frames = [
        ClientFrame {
            id: 1,
            request: Request::Challenge,
        },
        ClientFrame {
            id: 2,
            request: Request::Register {
                address: "alice@relay.example:8443".into(),
                device_id: "00ff".into(),
                public_key: [7; 32],
                install_id: [5; 16],
                take_over: false,
                signature: vec![1; 64],
            },
        },
        ClientFrame {
            id: 3,
            request: Request::PostMailbox {
                post_id: [9; 16],
                recipients: vec![dev.clone()],
                payload: b"payload".to_vec(),
            },
        },
        ClientFrame {
            id: 4,
            request: Request::SubscribeMailbox {
                device: dev.clone(),
                after: 0,
            },
        },
        ClientFrame {
            id: 5,
            request: Request::PostGroup {
                post_id: [1; 16],
                group_id: vec![2; 16],
                message: vec![0, 1, 0, 2, 3],
                added: vec![[4; 32]],
                removed: vec![],
            },
        },
        ClientFrame {
            id: 6,
            request: Request::Ping,
        },
    ];
    let mut stream = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let bytes = wire::encode(f);
        write("relay_frame", &format!("client-{i}"), &bytes);
        stream.extend_from_slice(&u16::try_from(bytes.len()).expect("small").to_be_bytes());
        stream.extend_from_slice(&bytes);
    }
    write("relay_stream", "six-frames", &stream);
    write("relay_stream", "bad-version", &[0, 2, 9, 0]);
    let welcome = MailboxPayload::Welcome(WelcomeEnvelope {
        relay_url: "wss://relay.example/sotto/v1".into(),
        group_id: vec![5; 16],
        join_seq: 3,
        welcome: vec![0, 1, 0, 3, 1, 2, 3],
    });
    write("relay_frame", "welcome-payload", &wire::encode(&welcome));
    let lines = [
        r#"{"jsonrpc":"2.0","id":1,"method":"daemon.status"}"#,
        r#"{"jsonrpc":"2.0","id":"a","method":"message.send","params":{"conversation":"bob@relay.example","text":"hi","idempotency_key":"k1"}}"#,
        r#"[{"jsonrpc":"2.0","method":"events.subscribe","params":{"since":0}},{"jsonrpc":"2.0","id":2,"method":"nope"}]"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"account.create","params":{"name":"alice","relay":"relay.example","extra":1}}"#,
        r#"{"jsonrpc":"1.0","id":[1],"method":5}"#,
        "[]",
        "{not json",
    ];
    write("jsonrpc_lines", "lines", lines.join("\n").as_bytes());
    for (i, l) in lines.iter().enumerate() {
        write("jsonrpc_lines", &format!("line-{i}"), l.as_bytes());
    }
    let e = Envelope {
        id: [1; 16],
        kind: "text".into(),
        body: "hello".into(),
        sent_at: 1_700_000_000,
        reply_to: Some([2; 16]),
    };
    write("envelope", "text", &e.seal().expect("seal"));
    write("envelope", "short", &[0, 0, 0, 200, 1]);
}
