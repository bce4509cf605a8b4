//! The Sotto envelope: what one member's daemon encrypts for the others inside an MLS
//! application message. Versioned, and padded to size buckets so the relay cannot read
//! lengths.

use serde::{Deserialize, Serialize};

use crate::wire::{self, DecodeError};

/// Padded plaintext sizes: every envelope is padded up to the first bucket it fits.
pub const BUCKETS: &[usize] = &[256, 1024, 4096, 16 * 1024, 64 * 1024];

/// The largest encoded envelope (the last bucket); the relay's frame limit is far above
/// this plus MLS overhead.
pub const MAX_PADDED: usize = 64 * 1024;

/// An application payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// 16 random bytes chosen by the sender; receivers dedupe on (conversation, sender, id).
    pub id: [u8; 16],
    /// `text` in v1; receivers skip kinds they do not know.
    pub kind: String,
    /// The body (the text for `text`).
    pub body: String,
    /// The sender's clock, seconds since the Unix epoch.
    pub sent_at: i64,
    /// The id of the message this one replies to.
    pub reply_to: Option<[u8; 16]>,
}

/// Why an envelope could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The padding frame is broken.
    #[error("bad envelope padding")]
    Padding,
    /// The inner encoding is broken or from an unknown version.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Too large for the largest bucket.
    #[error("envelope of {0} bytes exceeds the largest bucket")]
    TooLarge(usize),
}

impl Envelope {
    /// Encodes and pads: `u32be(len) ‖ encode(self) ‖ zeros` up to a bucket size.
    pub fn seal(&self) -> Result<Vec<u8>, EnvelopeError> {
        let inner = wire::encode(self);
        let needed = inner.len() + 4;
        let size = BUCKETS
            .iter()
            .copied()
            .find(|b| *b >= needed)
            .ok_or(EnvelopeError::TooLarge(needed))?;
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(
            &u32::try_from(inner.len())
                .map_err(|_| EnvelopeError::TooLarge(needed))?
                .to_be_bytes(),
        );
        out.extend_from_slice(&inner);
        out.resize(size, 0);
        Ok(out)
    }

    /// Removes the padding and decodes.
    pub fn open(padded: &[u8]) -> Result<Envelope, EnvelopeError> {
        let (len, rest) = padded
            .split_first_chunk::<4>()
            .ok_or(EnvelopeError::Padding)?;
        let len = u32::from_be_bytes(*len) as usize;
        let inner = rest.get(..len).ok_or(EnvelopeError::Padding)?;
        Ok(wire::decode(inner)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_to_buckets_and_opens() {
        let mut e = Envelope {
            id: [1; 16],
            kind: "text".into(),
            body: "hi".into(),
            sent_at: 1_700_000_000,
            reply_to: None,
        };
        let sealed = e.seal().unwrap();
        assert_eq!(sealed.len(), 256);
        assert_eq!(Envelope::open(&sealed).unwrap(), e);
        e.body = "x".repeat(5000);
        assert_eq!(e.seal().unwrap().len(), 16 * 1024);
        e.body = "x".repeat(70_000);
        assert!(matches!(e.seal(), Err(EnvelopeError::TooLarge(_))));
        assert!(Envelope::open(&[0, 0, 1, 0, 1]).is_err());
    }
}
