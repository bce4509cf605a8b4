//! MLS plumbing: the openmls provider over the daemon's one SQLite connection, the
//! credential and capability shapes, group configs, and the group-name extension.
//!
//! Every MLS operation runs on the store's writer thread inside a transaction, with a
//! [`Provider`] that borrows that transaction's connection: the MLS state change and the
//! app rows it implies commit (or roll back) together. The engine keeps each loaded group
//! in memory between transactions (`store::Tx::keep`); a rolled-back transaction drops
//! it, so the next one loads it from storage and never sees a stale group.

use openmls::prelude::*;
use openmls_rust_crypto::RustCrypto;
use openmls_sqlite_storage::{Codec, SqliteStorageProvider};
use openmls_traits::OpenMlsProvider;
use rusqlite::Connection;

/// The default ciphersuite: X25519 / AES-128-GCM / SHA-256 / Ed25519.
pub const DEFAULT_CIPHERSUITE: Ciphersuite =
    Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// The post-quantum hybrid: ML-KEM-768 + X25519 (X-Wing) / AES-128-GCM / SHA-256 / Ed25519,
/// code point 0x004F from draft-ietf-mls-pq-ciphersuites (openmls feature
/// `draft-ietf-mls-pq-ciphersuites`). Signatures stay Ed25519: it protects confidentiality
/// against a future quantum attacker (harvest now, decrypt later), not authentication.
pub const PQ_CIPHERSUITE: Ciphersuite =
    Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519;

/// Ciphersuites this daemon publishes key packages for and accepts per conversation.
pub const SUPPORTED_CIPHERSUITES: &[Ciphersuite] = &[
    Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519,
    Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519,
    PQ_CIPHERSUITE,
];

/// The private-use GroupContext extension that carries the conversation name.
pub const GROUP_NAME_EXTENSION: u16 = 0xff01;

/// How many past epochs' secrets a member keeps to decrypt late application messages:
/// none.
///
/// The relay accepts application messages only at the group's current epoch and every
/// member processes the log in order, so a message is always decrypted in the epoch it
/// was sent in. Fewer kept epochs means better forward secrecy, and a kept epoch is not
/// free: openmls stores each past epoch with its member list (every leaf's credential and
/// keys) inside the message-secrets record it rewrites on EVERY message sent or received,
/// so with one past epoch a message in a 1,000-member group serialized ~1,000 members
/// twice (issue 12: the message step cost 26× raw openmls in CPU). Groups created before
/// this change keep the setting stored with them.
pub const MAX_PAST_EPOCHS: usize = 0;

/// Single-use key packages published per ciphersuite, and the level that triggers a refill.
pub const KEY_PACKAGE_BATCH: usize = 20;
/// Refill when fewer than this many single-use packages remain on the relay.
pub const KEY_PACKAGE_LOW_WATER: u32 = 5;

/// openmls's storage codec: JSON.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    type Error = serde_json::Error;

    fn to_vec<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Self::Error> {
        serde_json::to_vec(value)
    }

    fn from_slice<T: serde::de::DeserializeOwned>(slice: &[u8]) -> Result<T, Self::Error> {
        serde_json::from_slice(slice)
    }
}

/// The storage type every MLS call uses.
pub type Storage<'a> = SqliteStorageProvider<JsonCodec, &'a Connection>;

/// An openmls provider borrowing one connection (normally a transaction's).
pub struct Provider<'a> {
    crypto: RustCrypto,
    storage: Storage<'a>,
}

impl std::fmt::Debug for Provider<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Provider")
    }
}

impl<'a> Provider<'a> {
    /// A provider over `conn`.
    pub fn new(conn: &'a Connection) -> Provider<'a> {
        Provider {
            crypto: RustCrypto::default(),
            storage: SqliteStorageProvider::new(conn),
        }
    }
}

impl<'a> OpenMlsProvider for Provider<'a> {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = Storage<'a>;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}

/// Creates openmls's own tables (kept apart from ours, with their own migration table).
pub fn run_migrations(conn: &mut Connection) -> Result<(), String> {
    SqliteStorageProvider::<JsonCodec, &mut Connection>::new(conn)
        .run_migrations()
        .map_err(|e| format!("openmls storage migrations: {e}"))
}

/// The leaf capabilities every Sotto key package and leaf advertises.
pub fn capabilities() -> Capabilities {
    Capabilities::builder()
        .ciphersuites(SUPPORTED_CIPHERSUITES.to_vec())
        .extensions(vec![
            ExtensionType::Unknown(GROUP_NAME_EXTENSION),
            ExtensionType::LastResort,
        ])
        .build()
}

/// The credential of a device: a BasicCredential of `address/device_id` with its key.
pub fn credential(address: &str, device_id: &str, public_key: &[u8]) -> CredentialWithKey {
    let identity = sotto_protocol::relay::credential_identity(address, device_id);
    CredentialWithKey {
        credential: BasicCredential::new(identity.into_bytes()).into(),
        signature_key: public_key.to_vec().into(),
    }
}

/// Splits a credential identity `address/device_id`.
pub fn parse_identity(credential: &Credential) -> Option<(String, String)> {
    let basic = BasicCredential::try_from(credential.clone()).ok()?;
    let text = std::str::from_utf8(basic.identity()).ok()?;
    let (address, device) = text.rsplit_once('/')?;
    Some((address.to_owned(), device.to_owned()))
}

/// The config of groups this daemon creates.
pub fn create_config(ciphersuite: Ciphersuite) -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(ciphersuite)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .capabilities(capabilities())
        .build()
}

/// A new group of this daemon's shape (ratchet tree in Welcomes, ciphertext only, our
/// capabilities, the name in the group context), stored through `provider`.
pub fn new_group(
    provider: &Provider<'_>,
    signer: &impl openmls_traits::signatures::Signer,
    credential: CredentialWithKey,
    group_id: &[u8],
    ciphersuite: Ciphersuite,
    name: Option<&str>,
) -> Result<MlsGroup, String> {
    MlsGroup::builder()
        .with_group_id(GroupId::from_slice(group_id))
        .ciphersuite(ciphersuite)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .with_wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .with_capabilities(capabilities())
        .with_group_context_extensions(name_extensions(name))
        .build(provider, signer, credential)
        .map_err(|e| format!("creating the group: {e}"))
}

/// The config for joining from a Welcome.
pub fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .build()
}

/// The GroupContext extensions: the required capabilities (every member must understand
/// the name extension) and the name, if any.
pub fn name_extensions(name: Option<&str>) -> Extensions<GroupContext> {
    let required = Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
        &[ExtensionType::Unknown(GROUP_NAME_EXTENSION)],
        &[],
        &[],
    ));
    let mut list = vec![required];
    if let Some(n) = name {
        list.push(Extension::Unknown(
            GROUP_NAME_EXTENSION,
            UnknownExtension(n.as_bytes().to_vec()),
        ));
    }
    Extensions::from_vec(list).unwrap_or_else(|_| Extensions::empty())
}

/// The conversation name from the group's context, if set.
pub fn group_name(group: &MlsGroup) -> Option<String> {
    group
        .extensions()
        .unknown(GROUP_NAME_EXTENSION)
        .and_then(|u| String::from_utf8(u.0.clone()).ok())
        .filter(|s| !s.is_empty())
}

/// A group member as the app sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The account address.
    pub address: String,
    /// The device id.
    pub device_id: String,
    /// The device's signature key.
    pub public_key: Vec<u8>,
    /// Its leaf index.
    pub leaf: u32,
}

/// Every member of `group`.
pub fn members(group: &MlsGroup) -> Vec<MemberInfo> {
    group
        .members()
        .filter_map(|m| {
            let (address, device_id) = parse_identity(&m.credential)?;
            Some(MemberInfo {
                address,
                device_id,
                public_key: m.signature_key.clone(),
                leaf: m.index.u32(),
            })
        })
        .collect()
}

/// Parses a ciphersuite from a name (`MLS_128_...`) or a number (`1`, `0x0001`).
pub fn parse_ciphersuite(input: &str) -> Option<Ciphersuite> {
    let input = input.trim();
    let number = if let Some(hex) = input.strip_prefix("0x") {
        u16::from_str_radix(hex, 16).ok()
    } else {
        input.parse::<u16>().ok()
    };
    let suite = match number {
        Some(n) => Ciphersuite::try_from(n).ok()?,
        None => SUPPORTED_CIPHERSUITES
            .iter()
            .copied()
            .find(|c| format!("{c:?}").eq_ignore_ascii_case(input))?,
    };
    SUPPORTED_CIPHERSUITES.contains(&suite).then_some(suite)
}

/// The name shown in the API for a ciphersuite.
pub fn ciphersuite_name(c: Ciphersuite) -> String {
    format!("{c:?}")
}

/// The supported ciphersuites' names, comma-separated (for error messages).
pub fn supported_names() -> String {
    SUPPORTED_CIPHERSUITES
        .iter()
        .map(|c| format!("{} ({:#06x})", ciphersuite_name(*c), u16::from(*c)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ciphersuites_parse_by_name_and_number() {
        let pq = "MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519";
        assert_eq!(parse_ciphersuite(pq), Some(PQ_CIPHERSUITE));
        assert_eq!(parse_ciphersuite(&pq.to_lowercase()), Some(PQ_CIPHERSUITE));
        assert_eq!(parse_ciphersuite("0x004f"), Some(PQ_CIPHERSUITE));
        assert_eq!(parse_ciphersuite("79"), Some(PQ_CIPHERSUITE));
        assert_eq!(parse_ciphersuite("1"), Some(DEFAULT_CIPHERSUITE));
        assert_eq!(ciphersuite_name(PQ_CIPHERSUITE), pq);
        // Known to openmls but not offered by Sotto, and unknown ones.
        assert_eq!(parse_ciphersuite("0x0002"), None);
        assert_eq!(
            parse_ciphersuite("MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519"),
            None
        );
        assert_eq!(parse_ciphersuite("rot13"), None);
        assert_eq!(parse_ciphersuite("0xzz"), None);
        assert_eq!(parse_ciphersuite(""), None);
    }

    #[test]
    fn the_crypto_provider_supports_every_offered_suite() {
        use openmls_traits::crypto::OpenMlsCrypto as _;
        let crypto = RustCrypto::default();
        for c in SUPPORTED_CIPHERSUITES {
            assert!(crypto.supports(*c).is_ok(), "{c:?}");
        }
    }
}
