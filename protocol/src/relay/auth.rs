//! The bytes a device signs to prove its key to a relay.

/// The domain-separation label of relay authentication (wire version 2: the proof
/// covers the install id and the take-over flag), distinct from every MLS label.
pub const AUTH_LABEL: &[u8] = b"sotto-relay-auth-v2";

/// A random 16-byte id of one *install* of a device: one data directory holding the
/// device key. A restored backup is a new install of the same device key; the home relay
/// serves only the account's active install (see `Request::Authenticate`).
pub type InstallId = [u8; 16];

/// The MLS credential identity of a device: `address/device_id`.
///
/// This is the exact byte string of the device's MLS `BasicCredential`, and the claimed
/// identity in the relay's authentication proof.
pub fn credential_identity(address: &str, device_id: &str) -> String {
    format!("{address}/{device_id}")
}

/// The message a device signs with its Ed25519 key to authenticate or register.
///
/// `AUTH_LABEL ‖ u32be(len url) ‖ url ‖ nonce ‖ u32be(len identity) ‖ identity ‖
/// install_id ‖ take_over`, where `url` is the relay's canonical public URL as announced
/// in [`super::Hello`], `nonce` is the connection's current 32-byte challenge, `identity`
/// is [`credential_identity`]`(address, device_id)`, `install_id` the 16 raw bytes of the
/// install and `take_over` one byte (1 or 0). The length prefixes make the concatenation
/// unambiguous.
pub fn auth_message(
    relay_url: &str,
    nonce: &[u8; 32],
    address: &str,
    device_id: &str,
    install_id: &InstallId,
    take_over: bool,
) -> Vec<u8> {
    let identity = credential_identity(address, device_id);
    let mut out =
        Vec::with_capacity(AUTH_LABEL.len() + 8 + relay_url.len() + 32 + identity.len() + 17);
    out.extend_from_slice(AUTH_LABEL);
    out.extend_from_slice(&len_prefix(relay_url.len()));
    out.extend_from_slice(relay_url.as_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&len_prefix(identity.len()));
    out.extend_from_slice(identity.as_bytes());
    out.extend_from_slice(install_id);
    out.push(u8::from(take_over));
    out
}

fn len_prefix(len: usize) -> [u8; 4] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_binds_every_part() {
        let nonce = [7u8; 32];
        let url = "wss://a.example/sotto/v1";
        let i = [3u8; 16];
        let a = auth_message(url, &nonce, "bob@a.example", "d1", &i, false);
        let b = auth_message(
            "wss://b.example/sotto/v1",
            &nonce,
            "bob@a.example",
            "d1",
            &i,
            false,
        );
        let c = auth_message(url, &[8u8; 32], "bob@a.example", "d1", &i, false);
        let d = auth_message(url, &nonce, "bob@a.example", "d2", &i, false);
        let e = auth_message(url, &nonce, "bob@a.example", "d1", &[4u8; 16], false);
        let f = auth_message(url, &nonce, "bob@a.example", "d1", &i, true);
        assert!(a.starts_with(AUTH_LABEL));
        for other in [&b, &c, &d, &e, &f] {
            assert_ne!(&a, other);
        }
        assert_eq!(
            credential_identity("bob@a.example", "d1"),
            "bob@a.example/d1"
        );
    }
}
