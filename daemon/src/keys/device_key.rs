//! The device identity key: an Ed25519 key that signs MLS messages and relay challenges.

use ed25519_dalek::{Signer as _, SigningKey};
use openmls_traits::signatures::{Signer, SignerError};
use openmls_traits::types::SignatureScheme;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// The length of the stored secret: the Ed25519 seed.
pub const SEED_LEN: usize = 32;

/// The device's private key, zeroized on drop. Its `Debug` shows only the fingerprint.
///
/// It implements openmls's [`Signer`], so MLS code signs through it and the private key
/// never passes through `SignatureKeyPair::store` (which would write it to SQLite).
pub struct DeviceKey {
    signing: SigningKey,
}

impl DeviceKey {
    /// A fresh key from the OS RNG.
    pub fn generate() -> DeviceKey {
        DeviceKey {
            signing: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// Rebuilds a key from its 32-byte seed, as kept in the key store.
    pub fn from_seed(seed: &[u8]) -> Option<DeviceKey> {
        let seed: &[u8; SEED_LEN] = seed.try_into().ok()?;
        Some(DeviceKey {
            signing: SigningKey::from_bytes(seed),
        })
    }

    /// The seed, for the key store only.
    pub fn seed(&self) -> Zeroizing<[u8; SEED_LEN]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// SHA-256 of the public key, lowercase hex.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public_key())
    }

    /// Signs `msg` (raw Ed25519).
    pub fn sign_raw(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }
}

/// The fingerprint of a public key: SHA-256, lowercase hex.
pub fn fingerprint(public_key: &[u8]) -> String {
    hex::encode(Sha256::digest(public_key))
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Signer for DeviceKey {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(self.sign_raw(payload).to_vec())
    }

    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openmls_rust_crypto::OpenMlsRustCrypto;
    use openmls_traits::OpenMlsProvider as _;
    use openmls_traits::crypto::OpenMlsCrypto as _;

    #[test]
    fn signs_what_openmls_verifies() {
        let key = DeviceKey::generate();
        let sig = Signer::sign(&key, b"payload").unwrap();
        let provider = OpenMlsRustCrypto::default();
        provider
            .crypto()
            .verify_signature(
                SignatureScheme::ED25519,
                b"payload",
                &key.public_key(),
                &sig,
            )
            .unwrap();
    }

    #[test]
    fn seed_round_trip_and_debug_hides_the_key() {
        let key = DeviceKey::generate();
        let again = DeviceKey::from_seed(&key.seed()[..]).unwrap();
        assert_eq!(key.public_key(), again.public_key());
        let shown = format!("{key:?}");
        assert!(!shown.contains(&hex::encode(&key.seed()[..])));
        assert!(shown.contains(&key.fingerprint()));
        assert!(DeviceKey::from_seed(&[1, 2, 3]).is_none());
    }
}
