//! The binary encoding shared by relay frames and daemon-to-daemon payloads:
//! one version byte, then postcard. Pure functions; transports call them.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::relay::{MIN_WIRE_VERSION, WIRE_VERSION};

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Zero bytes.
    #[error("empty frame")]
    Empty,
    /// The peer speaks another version (newer or older than this build).
    #[error(
        "unsupported wire version {version} (this build speaks {MIN_WIRE_VERSION}..={WIRE_VERSION})"
    )]
    Version {
        /// The version byte received.
        version: u8,
    },
    /// The body is not valid for this version: corrupt or hostile bytes.
    #[error("malformed frame: {reason}")]
    Malformed {
        /// What the decoder said.
        reason: String,
    },
}

/// Encodes `[WIRE_VERSION] ‖ postcard(value)`.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own in-memory types into a Vec cannot fail.
    postcard::to_extend(value, vec![WIRE_VERSION]).unwrap_or_else(|_| vec![WIRE_VERSION])
}

/// Decodes bytes made by [`encode`], rejecting other versions and trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if !(MIN_WIRE_VERSION..=WIRE_VERSION).contains(&version) {
        return Err(DecodeError::Version { version });
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| DecodeError::Malformed {
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed {
            reason: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(value)
}
