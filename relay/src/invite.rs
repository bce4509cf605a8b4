//! Invitations for invite-only relays: the admin key file, signed tokens, durations.
//!
//! A token is `sotto-invite1.KEY.USES.EXPIRES.NONCE.SIG`: the admin's Ed25519 public key
//! (which names the relay that honours it), how many registrations it allows, its expiry
//! (Unix seconds), a random 16-byte nonce (the token's identity, under which the relay
//! counts uses) and the admin's signature over all of that. KEY, NONCE and SIG are
//! unpadded base64url; USES and EXPIRES decimal. Tokens are made offline by
//! `sotto-relay invite create`; the relay keeps only the nonces and their use counts.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

/// The token prefix (and format version).
pub const PREFIX: &str = "sotto-invite1";
/// Domain separation of the admin's signature (distinct from the auth proof's label).
const LABEL: &[u8] = b"sotto-relay-invite-v1\0";
/// The default lifetime of an invitation.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(7 * 86_400);
/// The most uses one invitation may carry.
pub const MAX_USES: u32 = 1_000_000;

/// Why an admin key file or a token is unusable.
#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    /// The key file could not be read, created or trusted.
    #[error("admin key {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The token is not one (syntax, signature, another relay's, expired).
    #[error("{0}")]
    Invalid(String),
}

fn key_error(path: &Path, reason: impl std::fmt::Display) -> InviteError {
    InviteError::KeyFile {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Loads the admin key from `path`, creating the file (mode 0600, a fresh key) when it
/// does not exist. A file that others may read is refused.
pub fn load_or_create_admin_key(path: &Path) -> Result<SigningKey, InviteError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if !meta.file_type().is_file() {
                return Err(key_error(path, "not a regular file"));
            }
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(key_error(
                    path,
                    format!("mode {mode:04o} lets others read it; chmod 600 it"),
                ));
            }
            let text =
                Zeroizing::new(std::fs::read_to_string(path).map_err(|e| key_error(path, e))?);
            let mut seed = Zeroizing::new([0u8; 32]);
            hex::decode_to_slice(text.trim(), seed.as_mut_slice())
                .map_err(|_| key_error(path, "not 64 hex digits (an Ed25519 secret key)"))?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| key_error(path, format!("cannot create: {e}")))?;
            let text = Zeroizing::new(format!("{}\n", hex::encode(key.to_bytes())));
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| key_error(path, format!("cannot write: {e}")))?;
            tracing::info!(path = %path.display(), "created a new admin key");
            Ok(key)
        }
        Err(e) => Err(key_error(path, e)),
    }
}

/// The fields of an invitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// The admin public key that signed it.
    pub admin_key: [u8; 32],
    /// Registrations it allows.
    pub uses: u32,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
    /// Its identity.
    pub nonce: [u8; 16],
}

impl Invite {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(LABEL.len() + 32 + 4 + 8 + 16);
        m.extend_from_slice(LABEL);
        m.extend_from_slice(&self.admin_key);
        m.extend_from_slice(&self.uses.to_be_bytes());
        m.extend_from_slice(&self.expires_at.to_be_bytes());
        m.extend_from_slice(&self.nonce);
        m
    }

    /// A new invitation signed by `admin`, as a token.
    pub fn create(admin: &SigningKey, uses: u32, expires_at: u64) -> String {
        let invite = Invite {
            admin_key: admin.verifying_key().to_bytes(),
            uses,
            expires_at,
            nonce: rand::random(),
        };
        let sig = admin.sign(&invite.signed_bytes());
        format!(
            "{PREFIX}.{}.{uses}.{expires_at}.{}.{}",
            B64.encode(invite.admin_key),
            B64.encode(invite.nonce),
            B64.encode(sig.to_bytes())
        )
    }

    /// Parses `token` and checks its signature; it must be signed by `admin` (else it is
    /// another relay's) and not expired at `now`. Uses are counted by the store.
    pub fn verify(token: &str, admin: &VerifyingKey, now: u64) -> Result<Invite, InviteError> {
        let bad = |why: &str| InviteError::Invalid(format!("the invitation {why}"));
        let parts: Vec<&str> = token.trim().split('.').collect();
        let [prefix, key, uses, expires, nonce, sig] = parts.as_slice() else {
            return Err(bad("is not a sotto-invite1 token"));
        };
        if *prefix != PREFIX {
            return Err(bad("is not a sotto-invite1 token"));
        }
        let fixed = |s: &str, what: &str| -> Result<Vec<u8>, InviteError> {
            B64.decode(s)
                .map_err(|_| bad(&format!("has a malformed {what}")))
        };
        let admin_key: [u8; 32] = fixed(key, "key")?
            .try_into()
            .map_err(|_| bad("has a malformed key"))?;
        let nonce: [u8; 16] = fixed(nonce, "nonce")?
            .try_into()
            .map_err(|_| bad("has a malformed nonce"))?;
        let sig = Signature::from_slice(&fixed(sig, "signature")?)
            .map_err(|_| bad("has a malformed signature"))?;
        let invite = Invite {
            admin_key,
            uses: uses.parse().map_err(|_| bad("has a malformed use count"))?,
            expires_at: expires.parse().map_err(|_| bad("has a malformed expiry"))?,
            nonce,
        };
        if admin_key != admin.to_bytes() {
            return Err(bad("was issued by another relay's admin key"));
        }
        admin
            .verify_strict(&invite.signed_bytes(), &sig)
            .map_err(|_| bad("has a bad signature"))?;
        if now >= invite.expires_at {
            return Err(bad("has expired"));
        }
        if invite.uses == 0 {
            return Err(bad("allows no registration"));
        }
        Ok(invite)
    }
}

/// Parses a DURATION: a positive number and a unit, `s`, `m`, `h`, `d` or `w`
/// (`30s`, `10m`, `7d`).
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{input:?}: give a unit, e.g. 30s, 10m, 12h, 7d, 2w"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{input:?}: expected a number and a unit, e.g. 7d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{input:?}: unknown unit {unit:?} (s, m, h, d, w)")),
    };
    let total = n
        .checked_mul(secs)
        .filter(|t| *t > 0 && *t <= 100 * 365 * 86_400)
        .ok_or_else(|| format!("{input:?}: out of range (1s to 100 years)"))?;
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::generate(&mut rand::rngs::OsRng)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(1_209_600)));
        for bad in [
            "",
            "7",
            "d",
            "0s",
            "-1d",
            "1y",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_verify_only_for_their_admin_unexpired_and_untampered() {
        let (admin, other) = (key(), key());
        let token = Invite::create(&admin, 3, 2_000);
        let got = Invite::verify(&token, &admin.verifying_key(), 1_000).unwrap();
        assert_eq!((got.uses, got.expires_at), (3, 2_000));
        assert!(token.starts_with("sotto-invite1."));
        let err = |t: &str, k: &SigningKey, now| {
            Invite::verify(t, &k.verifying_key(), now)
                .unwrap_err()
                .to_string()
        };
        assert!(err(&token, &other, 1_000).contains("another relay"));
        assert!(err(&token, &admin, 2_000).contains("expired"));
        // A changed use count breaks the signature.
        let forged = token.replacen(".3.", ".300.", 1);
        assert!(err(&forged, &admin, 1_000).contains("signature"));
        // Signed by another key but claiming this admin's key.
        let mut parts: Vec<String> = Invite::create(&other, 3, 2_000)
            .split('.')
            .map(str::to_owned)
            .collect();
        parts[1] = B64.encode(admin.verifying_key().to_bytes());
        assert!(err(&parts.join("."), &admin, 1_000).contains("signature"));
        for junk in [
            "",
            "sotto-invite1",
            "x.y.z.w.v.u",
            "sotto-invite1.a.b.c.d.e",
        ] {
            assert!(Invite::verify(junk, &admin.verifying_key(), 1).is_err());
        }
        assert!(err(&Invite::create(&admin, 0, 2_000), &admin, 1).contains("no registration"));
    }

    #[test]
    fn the_key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.key");
        let k1 = load_or_create_admin_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k2 = load_or_create_admin_key(&path).unwrap();
        assert_eq!(k1.to_bytes(), k2.to_bytes());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            load_or_create_admin_key(&path)
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "nonsense").unwrap();
        assert!(load_or_create_admin_key(&path).is_err());
        assert!(load_or_create_admin_key(&dir.path().join("missing/admin.key")).is_err());
    }
}
