//! Reading one client frame as a relay does: the size limit, the version byte, the body.

use super::{ClientFrame, MIN_FRAME_VERSION, RelayError, RelayErrorKind, WIRE_VERSION};
use crate::wire::{self, DecodeError};

/// Decodes one binary WebSocket message from a client. The error is the connection-level
/// error the relay answers with before closing (every kind returned here
/// [closes the connection](RelayError::closes_connection)). Never panics, whatever the
/// bytes: `sotto-relay` calls it on every frame, and the `relay_stream` fuzz target drives it.
pub fn parse_client_frame(bytes: &[u8], max_frame_bytes: u32) -> Result<ClientFrame, RelayError> {
    if bytes.len() > max_frame_bytes as usize {
        return Err(RelayError::new(
            RelayErrorKind::TooLarge {
                max_bytes: max_frame_bytes,
            },
            format!(
                "frame of {} bytes exceeds the limit of {max_frame_bytes}",
                bytes.len()
            ),
        ));
    }
    // Frames older than MIN_FRAME_VERSION would decode (their layout differs only in the
    // authentication requests, which cannot prove an install), so the version byte is
    // checked first.
    let decoded = match bytes.first() {
        Some(&version) if version < MIN_FRAME_VERSION => Err(DecodeError::Version { version }),
        _ => wire::decode(bytes),
    };
    match decoded {
        Ok(frame) => Ok(frame),
        Err(DecodeError::Version { version }) => Err(RelayError::new(
            RelayErrorKind::UnsupportedVersion {
                min: MIN_FRAME_VERSION,
                max: WIRE_VERSION,
            },
            format!(
                "wire version {version} is not spoken here; this relay speaks {MIN_FRAME_VERSION} to {WIRE_VERSION}: {}",
                if version > WIRE_VERSION {
                    "the client is newer than this relay"
                } else {
                    "the client is too old, upgrade it"
                }
            ),
        )),
        Err(e) => Err(RelayError::new(RelayErrorKind::Malformed, e.to_string())),
    }
}
