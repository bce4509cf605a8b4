//! The frame encoding: one version byte, then postcard. It lives in
//! [`sotto_protocol::wire`] so the relay and every client share one implementation.

pub use sotto_protocol::wire::{DecodeError, decode, encode};

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_protocol::relay::{ClientFrame, Request, WIRE_VERSION};

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
