//! The frame encoding: one version byte, then postcard.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sotto_protocol::relay::{MIN_WIRE_VERSION, WIRE_VERSION};

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Zero bytes.
    #[error("empty frame")]
    Empty,
    /// The peer speaks another wire version.
    #[error("unsupported wire version {version}")]
    Version {
        /// The version byte received.
        version: u8,
    },
    /// The body is not a valid frame of this version.
    #[error("malformed frame: {reason}")]
    Malformed {
        /// Postcard's explanation.
        reason: String,
    },
}

/// Encodes a frame: `[WIRE_VERSION] ‖ postcard(frame)`.
pub fn encode<T: Serialize>(frame: &T) -> Vec<u8> {
    let out = vec![WIRE_VERSION];
    // Serializing our own in-memory types into a Vec cannot fail.
    match postcard::to_extend(frame, out) {
        Ok(v) => v,
        Err(_) => vec![WIRE_VERSION],
    }
}

/// Decodes a frame, rejecting other versions and trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if !(MIN_WIRE_VERSION..=WIRE_VERSION).contains(&version) {
        return Err(DecodeError::Version { version });
    }
    let (frame, rest) = postcard::take_from_bytes(body).map_err(|e| DecodeError::Malformed {
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed {
            reason: format!("{} trailing bytes", rest.len()),
        });
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_protocol::relay::{ClientFrame, Request};

    #[test]
    fn round_trip_and_rejections() {
        let f = ClientFrame {
            id: 7,
            request: Request::Ping,
        };
        let bytes = encode(&f);
        assert_eq!(bytes[0], WIRE_VERSION);
        assert_eq!(decode::<ClientFrame>(&bytes), Ok(f));
        assert_eq!(decode::<ClientFrame>(&[]), Err(DecodeError::Empty));
        assert_eq!(
            decode::<ClientFrame>(&[9, 0]),
            Err(DecodeError::Version { version: 9 })
        );
        assert!(matches!(
            decode::<ClientFrame>(&[WIRE_VERSION, 0xff, 0xff]),
            Err(DecodeError::Malformed { .. })
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<ClientFrame>(&trailing),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
