//! The bodies of Sotto's fuzz targets: each takes arbitrary bytes, drives one decoder of
//! hostile input exactly as its production caller does, and panics only on a real defect
//! (a decoder that panics, or an accepted value that does not survive its own encoding).
//!
//! This file is compiled twice: into the `sotto-fuzz` crate for cargo-fuzz, and into
//! sotto-protocol's unit tests (`fuzz_corpus`), which replay every kept input of
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` on stable Rust.

use sotto_protocol::address::Address;
use sotto_protocol::envelope::Envelope;
use sotto_protocol::jsonrpc::{self, Line};
use sotto_protocol::relay::{self, ClientFrame, MailboxPayload, Request, ServerFrame};
use sotto_protocol::{methods, wire};

/// A target's body.
pub type Body = fn(&[u8]);

/// Every target, by name (the replay test walks these directories).
pub const TARGETS: &[(&str, Body)] = &[
    ("relay_frame", relay_frame),
    ("relay_stream", relay_stream),
    ("jsonrpc_lines", jsonrpc_lines),
    ("envelope", envelope),
];

fn round_trip<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = wire::encode(value);
    match wire::decode::<T>(&bytes) {
        Ok(again) => assert_eq!(&again, value, "a decoded value re-encodes to itself"),
        Err(e) => panic!("a decoded value does not decode after encoding: {e}"),
    }
}

/// One relay frame, both directions, and a mailbox payload (what a daemon decodes from
/// its mailbox).
pub fn relay_frame(data: &[u8]) {
    if let Ok(f) = wire::decode::<ClientFrame>(data) {
        round_trip(&f);
    }
    if let Ok(f) = wire::decode::<ServerFrame>(data) {
        round_trip(&f);
    }
    if let Ok(p) = wire::decode::<MailboxPayload>(data) {
        round_trip(&p);
    }
}

/// A connection's request stream at the relay: the input is a sequence of frames, each a
/// big-endian u16 length and that many bytes (shorter at the end). Each is read with the
/// relay's own [`relay::parse_client_frame`]; the first connection-level error ends the
/// stream as it ends the connection. The addresses a request names are parsed as the
/// relay parses them.
pub fn relay_stream(data: &[u8]) {
    const MAX_FRAME: u32 = 4096;
    let mut rest = data;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let n = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (frame, next) = tail.split_at(n);
        rest = next;
        match relay::parse_client_frame(frame, MAX_FRAME) {
            Ok(f) => {
                round_trip(&f);
                addresses(&f.request);
            }
            Err(e) => {
                assert!(
                    e.kind.closes_connection(),
                    "a frame-level error closes the connection: {e:?}"
                );
                return;
            }
        }
    }
}

fn addresses(request: &Request) {
    let parse = |a: &str| {
        if let Ok(addr) = Address::parse(a) {
            let canonical = addr.to_string();
            assert_eq!(
                Address::parse(&canonical).map(|b| b.to_string()).as_deref(),
                Ok(canonical.as_str()),
                "a canonical address parses to itself"
            );
        }
    };
    match request {
        Request::Authenticate {
            address, device_id, ..
        }
        | Request::Register {
            address, device_id, ..
        } => {
            parse(address);
            let _ = relay::credential_identity(address, device_id);
        }
        Request::LookupAccount { address } => parse(address),
        Request::ClaimKeyPackage { device, .. } => parse(&device.address),
        Request::PostMailbox { recipients, .. } => {
            for r in recipients {
                parse(&r.address);
            }
        }
        Request::SubscribeMailbox { device, .. } | Request::AckMailbox { device, .. } => {
            parse(&device.address);
        }
        _ => {}
    }
}

/// The daemon's NDJSON socket: the input is split into lines as the daemon splits them;
/// each is read by [`jsonrpc::parse_line`] (the daemon's own framing code) and the params
/// of a known method are decoded into its params type, as the daemon's registry does.
/// Whatever the daemon would answer must encode as JSON.
pub fn jsonrpc_lines(data: &[u8]) {
    for line in data.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let calls = match jsonrpc::parse_line(line) {
            Line::Invalid(err) => {
                let r = jsonrpc::Response::err(serde_json::Value::Null, err);
                assert!(serde_json::to_string(&r).is_ok());
                continue;
            }
            Line::Single(c) => vec![c],
            Line::Batch(items) => items,
        };
        for call in calls {
            match call {
                Ok(call) => {
                    assert!(call.params.is_object(), "params are always an object");
                    if let Some(m) = methods::ALL.iter().find(|m| m.name == call.method) {
                        let _ = (m.decode_params)(call.params);
                    }
                }
                Err(rejected) => {
                    let r = jsonrpc::Response::err(rejected.id, rejected.error);
                    assert!(serde_json::to_string(&r).is_ok());
                }
            }
        }
    }
}

/// The application envelope inside an MLS message: the padding frame and the versioned
/// body, as a receiving daemon opens it; what opens seals and opens again.
pub fn envelope(data: &[u8]) {
    if let Ok(e) = Envelope::open(data)
        && let Ok(sealed) = e.seal()
    {
        assert_eq!(Envelope::open(&sealed).as_ref(), Ok(&e));
        assert!(sotto_protocol::envelope::BUCKETS.contains(&sealed.len()));
    }
}
