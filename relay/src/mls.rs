//! What the relay reads from MLS bytes: key packages (fully validated) and the public
//! framing of group messages (group id, epoch, content type, sender kind).

use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{
    BasicCredential, ContentType, KeyPackageIn, MlsMessageBodyIn, MlsMessageIn, ProtocolVersion,
    Sender,
};
use openmls_rust_crypto::RustCrypto;
use sotto_protocol::relay::{Principal, content_type};

use crate::storage::NewKeyPackage;

/// What a published key package must be.
#[derive(Debug, Clone, Copy)]
pub struct ExpectedKeyPackage<'a> {
    /// `address/device_id` of the publisher.
    pub identity: &'a str,
    /// The publisher's registered key.
    pub key: &'a Principal,
    /// The ciphersuite of the request.
    pub ciphersuite: u16,
    /// Whether this is the last-resort slot.
    pub last_resort: bool,
}

/// Parses and validates a key package (signatures, lifetime, credential, key, extension).
pub fn check_key_package(
    crypto: &RustCrypto,
    bytes: &[u8],
    want: ExpectedKeyPackage<'_>,
) -> Result<NewKeyPackage, String> {
    let kp_in = KeyPackageIn::tls_deserialize_exact(bytes)
        .map_err(|e| format!("not a key package: {e}"))?;
    let kp = kp_in
        .validate(crypto, ProtocolVersion::Mls10)
        .map_err(|e| format!("key package does not validate: {e}"))?;
    if u16::from(kp.ciphersuite()) != want.ciphersuite {
        return Err(format!(
            "ciphersuite {:#06x} does not match the request's {:#06x}",
            u16::from(kp.ciphersuite()),
            want.ciphersuite
        ));
    }
    let credential = BasicCredential::try_from(kp.leaf_node().credential().clone())
        .map_err(|_| "credential is not a basic credential".to_string())?;
    if credential.identity() != want.identity.as_bytes() {
        return Err(format!(
            "credential names {:?}, not {:?}",
            String::from_utf8_lossy(credential.identity()),
            want.identity
        ));
    }
    if kp.leaf_node().signature_key().as_slice() != want.key.as_slice() {
        return Err("signature key is not the publisher's registered key".into());
    }
    if kp.last_resort() != want.last_resort {
        return Err(if want.last_resort {
            "the last-resort package lacks the last_resort extension".into()
        } else {
            "only the last-resort package may carry the last_resort extension".into()
        });
    }
    let lifetime = kp.life_time();
    if !lifetime.has_acceptable_range() {
        return Err("lifetime range too long".into());
    }
    Ok(NewKeyPackage {
        data: bytes.to_vec(),
        not_before: lifetime.not_before(),
        not_after: lifetime.not_after(),
    })
}

/// The public framing of a group message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framing {
    /// The MLS group id.
    pub group_id: Vec<u8>,
    /// The epoch it was sent in.
    pub epoch: u64,
    /// The content type (see [`content_type`]).
    pub content_type: u8,
}

/// Reads the framing of a PublicMessage or PrivateMessage; refuses everything else.
/// Of the senders outside the group only `NewMemberCommit` is let through (an external
/// commit: an install of a member's device rejoining, the resync after a takeover); the
/// store then accepts it only from a principal already on the group's access list, under
/// the epoch rule. External proposals and external senders are refused.
pub fn read_framing(bytes: &[u8]) -> Result<Framing, String> {
    let msg = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| format!("not an mls message: {e}"))?;
    let (group_id, epoch, ct) = match msg.extract() {
        MlsMessageBodyIn::PublicMessage(m) => {
            let external_commit = matches!(m.sender(), Sender::NewMemberCommit)
                && m.content_type() == ContentType::Commit;
            if !matches!(m.sender(), Sender::Member(_)) && !external_commit {
                return Err("proposals and messages from non-members are refused".into());
            }
            (m.group_id().to_vec(), m.epoch().as_u64(), m.content_type())
        }
        MlsMessageBodyIn::PrivateMessage(m) => {
            (m.group_id().to_vec(), m.epoch().as_u64(), m.content_type())
        }
        _ => return Err("only public and private group messages go to a group log".into()),
    };
    let content_type = match ct {
        ContentType::Application => content_type::APPLICATION,
        ContentType::Proposal => content_type::PROPOSAL,
        ContentType::Commit => content_type::COMMIT,
    };
    Ok(Framing {
        group_id,
        epoch,
        content_type,
    })
}

/// Reads the public parts of a GroupInfo (`MlsMessage`): its group id and epoch. The
/// relay checks they match the commit it comes with and that it carries the ratchet tree
/// and the external public key an external joiner needs; the signature is the joiner's to
/// check (against the tree it carries).
pub fn read_group_info(bytes: &[u8]) -> Result<(Vec<u8>, u64), String> {
    let msg = MlsMessageIn::tls_deserialize_exact(bytes)
        .map_err(|e| format!("not an mls message: {e}"))?;
    match msg.extract() {
        MlsMessageBodyIn::GroupInfo(info) => {
            if info.extensions().ratchet_tree().is_none()
                || info.extensions().external_pub().is_none()
            {
                return Err(
                    "the GroupInfo lacks the ratchet tree or the external public key".into(),
                );
            }
            Ok((info.group_id().to_vec(), info.epoch().as_u64()))
        }
        _ => Err("not a GroupInfo".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused() {
        assert!(read_framing(b"").is_err());
        assert!(read_framing(&[0, 1, 0, 9, 9]).is_err());
        let crypto = RustCrypto::default();
        let want = ExpectedKeyPackage {
            identity: "a@b/c",
            key: &[0u8; 32],
            ciphersuite: 1,
            last_resort: false,
        };
        assert!(check_key_package(&crypto, b"junk", want).is_err());
    }
}

/// Random mutations of real MLS bytes (a key package, an application message, a commit):
/// the relay's readers of hostile MLS input never panic, the unmutated inputs pass, and a
/// key package whose signed part was changed never validates.
#[cfg(test)]
mod mutation_tests {
    use openmls::prelude::tls_codec::Serialize as _;
    use openmls::prelude::*;
    use openmls_basic_credential::SignatureKeyPair;
    use openmls_rust_crypto::OpenMlsRustCrypto;
    use proptest::prelude::*;

    use super::*;

    const SUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
    const IDENTITY: &str = "alice@relay.example/d1";

    struct Real {
        key_package: Vec<u8>,
        key: Principal,
        message: Vec<u8>,
        commit: Vec<u8>,
    }

    fn real() -> &'static Real {
        static REAL: std::sync::OnceLock<Real> = std::sync::OnceLock::new();
        REAL.get_or_init(|| {
            let provider = OpenMlsRustCrypto::default();
            let signer = SignatureKeyPair::new(SignatureScheme::ED25519).expect("keys");
            let credential = CredentialWithKey {
                credential: BasicCredential::new(IDENTITY.as_bytes().to_vec()).into(),
                signature_key: signer.public().into(),
            };
            let key_package = KeyPackage::builder()
                .build(SUITE, &provider, &signer, credential.clone())
                .expect("key package")
                .key_package()
                .tls_serialize_detached()
                .expect("encode");
            let mut group = MlsGroup::builder()
                .ciphersuite(SUITE)
                .build(&provider, &signer, credential)
                .expect("group");
            let message = group
                .create_message(&provider, &signer, b"hello")
                .expect("message")
                .tls_serialize_detached()
                .expect("encode");
            let (commit, _, _) = group
                .self_update(&provider, &signer, LeafNodeParameters::default())
                .expect("commit")
                .into_contents();
            Real {
                key_package,
                key: signer.public().try_into().expect("32 bytes"),
                message,
                commit: commit.tls_serialize_detached().expect("encode"),
            }
        })
    }

    fn want(key: &Principal) -> ExpectedKeyPackage<'_> {
        ExpectedKeyPackage {
            identity: IDENTITY,
            key,
            ciphersuite: u16::from(SUITE),
            last_resort: false,
        }
    }

    /// Flips, overwrites or cuts `bytes` as `ops` says.
    fn mutate(bytes: &[u8], ops: &[(usize, u8, u8)]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        for &(at, kind, value) in ops {
            if out.is_empty() {
                break;
            }
            let i = at % out.len();
            match kind % 4 {
                0 => out[i] ^= value | 1,
                1 => out[i] = value,
                2 => out.truncate(i),
                _ => out.insert(i, value),
            }
        }
        out
    }

    #[test]
    fn the_real_inputs_pass() {
        let r = real();
        let crypto = RustCrypto::default();
        assert!(check_key_package(&crypto, &r.key_package, want(&r.key)).is_ok());
        assert_eq!(
            read_framing(&r.message).map(|f| f.content_type),
            Ok(content_type::APPLICATION)
        );
        assert_eq!(
            read_framing(&r.commit).map(|f| f.content_type),
            Ok(content_type::COMMIT)
        );
    }

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

        #[test]
        fn mutated_mls_bytes_never_panic_and_forged_key_packages_never_validate(
            ops in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..6),
        ) {
            let r = real();
            let crypto = RustCrypto::default();
            let kp = mutate(&r.key_package, &ops);
            if let Ok(stored) = check_key_package(&crypto, &kp, want(&r.key)) {
                // Only an encoding of the very same signed package may pass.
                let reparsed = KeyPackageIn::tls_deserialize_exact(&stored.data)
                    .expect("it parsed before")
                    .validate(&crypto, ProtocolVersion::Mls10)
                    .expect("it validated before");
                let original = KeyPackageIn::tls_deserialize_exact(&r.key_package)
                    .expect("original")
                    .validate(&crypto, ProtocolVersion::Mls10)
                    .expect("original validates");
                prop_assert_eq!(reparsed.hash_ref(&crypto).ok(), original.hash_ref(&crypto).ok());
            }
            for bytes in [&r.message, &r.commit] {
                let _ = read_framing(&mutate(bytes, &ops));
            }
        }
    }
}
