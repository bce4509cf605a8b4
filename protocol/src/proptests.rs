//! Property tests (proptest): the envelope codec and its padding, address parsing, and the
//! relay frame codec. The fuzz targets in `fuzz/` drive the same decoders with
//! coverage guidance; these run in every `cargo test`.

use proptest::prelude::*;

use crate::address::{Address, HostPort};
use crate::envelope::{BUCKETS, Envelope, EnvelopeError, MAX_PADDED};
use crate::relay::{ClientFrame, Request, ServerFrame};
use crate::wire;

/// `PROPTEST_CASES` when set (a long run), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        any::<[u8; 16]>(),
        prop_oneof![Just("text".to_owned()), "[a-z_]{0,12}"],
        prop_oneof![
            8 => ".{0,600}",
            1 => (0usize..70_000).prop_map(|n| "é".repeat(n / 2)),
        ],
        any::<i64>(),
        proptest::option::of(any::<[u8; 16]>()),
    )
        .prop_map(|(id, kind, body, sent_at, reply_to)| Envelope {
            id,
            kind,
            body,
            sent_at,
            reply_to,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    /// A sealed envelope is exactly the smallest bucket it fits and opens to itself; one
    /// too large for the last bucket is refused, never truncated.
    #[test]
    fn envelopes_seal_to_the_smallest_bucket_and_open_to_themselves(e in envelope()) {
        let needed = wire::encode(&e).len() + 4;
        match e.seal() {
            Ok(sealed) => {
                let bucket = BUCKETS.iter().copied().find(|b| *b >= needed);
                prop_assert_eq!(Some(sealed.len()), bucket);
                prop_assert!(sealed.len() <= MAX_PADDED);
                prop_assert_eq!(Envelope::open(&sealed), Ok(e));
            }
            Err(EnvelopeError::TooLarge(n)) => {
                prop_assert_eq!(n, needed);
                prop_assert!(needed > MAX_PADDED);
            }
            Err(other) => prop_assert!(false, "unexpected {other}"),
        }
    }

    /// Any bytes: `open` never panics, and whatever it accepts seals and opens again.
    #[test]
    fn opening_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(e) = Envelope::open(&bytes)
            && let Ok(sealed) = e.seal()
        {
            prop_assert_eq!(Envelope::open(&sealed), Ok(e));
        }
    }

    /// A sealed envelope with its padding changed still opens to the same envelope, and
    /// with its length prefix pointing past the end it is refused.
    #[test]
    fn padding_bytes_do_not_matter_but_the_length_does(e in envelope(), junk in any::<u8>()) {
        let Ok(mut sealed) = e.seal() else { return Ok(()) };
        let inner = wire::encode(&e).len();
        for b in &mut sealed[4 + inner..] {
            *b = junk;
        }
        prop_assert_eq!(Envelope::open(&sealed), Ok(e));
        let too_long = u32::try_from(sealed.len()).unwrap_or(u32::MAX);
        sealed[..4].copy_from_slice(&too_long.to_be_bytes());
        prop_assert_eq!(Envelope::open(&sealed), Err(EnvelopeError::Padding));
    }
}

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,31}"
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9]{0,10}(\\.[a-z][a-z0-9]{0,10}){0,3}",
        (any::<u8>(), any::<u8>(), any::<u8>(), 1u8..255)
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    /// Valid addresses parse; their canonical form parses to the same address; the host
    /// is case-insensitive; the default port is dropped; the name is case-sensitive.
    #[test]
    fn addresses_round_trip_through_their_canonical_form(
        n in name(),
        h in host(),
        port in proptest::option::of(1u16..),
    ) {
        let input = match port {
            Some(p) => format!("{n}@{h}:{p}"),
            None => format!("{n}@{h}"),
        };
        let a = Address::parse(&input).expect("a valid address");
        prop_assert_eq!(a.name(), n.as_str());
        let canonical = a.to_string();
        prop_assert_eq!(Address::parse(&canonical), Ok(a.clone()));
        prop_assert_eq!(Address::parse(&format!("{n}@{}", input.split_once('@').unwrap().1.to_uppercase())), Ok(a.clone()));
        if port == Some(crate::address::DEFAULT_PORT) || port.is_none() {
            prop_assert_eq!(canonical, format!("{n}@{h}"));
        }
        if n.bytes().any(|b| b.is_ascii_lowercase()) {
            let upper = format!("{}@{h}", n.to_uppercase());
            prop_assert!(Address::parse(&upper).is_err());
        }
    }

    /// Any string: parsing never panics, and an accepted one is canonical after one round.
    #[test]
    fn parsing_arbitrary_strings_never_panics(s in "\\PC{0,80}") {
        if let Ok(a) = Address::parse(&s) {
            let canonical = a.to_string();
            prop_assert_eq!(Address::parse(&canonical).map(|b| b.to_string()), Ok(canonical));
        }
        if let Ok(h) = HostPort::parse(&s) {
            prop_assert_eq!(HostPort::parse(&h.to_string()), Ok(h));
        }
    }

    /// Names over 32 bytes or outside the grammar are refused.
    #[test]
    fn names_outside_the_grammar_are_refused(n in "[A-Z!#$%&*+/=]{1,3}[a-z0-9]{0,5}|[a-z0-9]{33,40}") {
        let input = format!("{n}@relay.example");
        prop_assert!(Address::parse(&input).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the frame decoder; anything it accepts encodes and
    /// decodes to itself.
    #[test]
    fn frame_decoding_never_panics_and_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(f) = wire::decode::<ClientFrame>(&bytes) {
            prop_assert_eq!(wire::decode::<ClientFrame>(&wire::encode(&f)), Ok(f));
        }
        if let Ok(f) = wire::decode::<ServerFrame>(&bytes) {
            prop_assert_eq!(wire::decode::<ServerFrame>(&wire::encode(&f)), Ok(f));
        }
    }

    /// Valid frames with a byte flipped or truncated are refused or decode to another
    /// valid frame; never a panic.
    #[test]
    fn damaged_frames_are_refused_or_valid(id in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..64), at in any::<usize>(), flip in 1u8..) {
        let f = ClientFrame {
            id,
            request: Request::PostMailbox { post_id: [3; 16], recipients: vec![], payload },
        };
        let original = wire::encode(&f);
        let i = at % original.len();
        let mut bytes = original.clone();
        bytes[i] ^= flip;
        let _ = wire::decode::<ClientFrame>(&bytes);
        // A strict prefix of a frame is never a frame.
        prop_assert!(wire::decode::<ClientFrame>(&original[..i]).is_err());
    }
}
