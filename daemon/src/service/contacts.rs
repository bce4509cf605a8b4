//! Contacts: pinned identity keys (trust on first use), safety numbers, verification.

use rusqlite::params;
use sha2::{Digest as _, Sha512};
use sotto_protocol::api::Contact;
use sotto_protocol::methods::{ContactAddParams, ContactTrustParams, ContactVerifyParams};
use sotto_protocol::relay::{Request, Response};
use sotto_protocol::{Address, ErrorKind, RelayUrl};

use super::{ApiError, Service};
use crate::model;
use crate::relay::RelayCallError;

/// The safety-number format version.
const SAFETY_VERSION: u16 = 0;
/// SHA-512 iterations per party.
const SAFETY_ITERATIONS: usize = 5200;

/// 30 digits for one party: SHA-512 iterated over (version ‖ key ‖ address).
pub fn party_digits(key: &[u8], address: &str) -> String {
    let mut hash = Sha512::new()
        .chain_update(SAFETY_VERSION.to_be_bytes())
        .chain_update(key)
        .chain_update(address.as_bytes())
        .finalize();
    for _ in 1..SAFETY_ITERATIONS {
        hash = Sha512::new()
            .chain_update(hash)
            .chain_update(key)
            .finalize();
    }
    (0..6)
        .map(|i| {
            let chunk = &hash[i * 5..i * 5 + 5];
            let n = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect()
}

/// The safety number of two parties: both parties' digits in sorted-address order, as 12
/// groups of 5 digits.
pub fn safety_number(a: (&str, &[u8]), b: (&str, &[u8])) -> String {
    let (first, second) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    let digits = party_digits(first.1, first.0) + &party_digits(second.1, second.0);
    digits
        .as_bytes()
        .chunks(5)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn relay_error(e: RelayCallError) -> ApiError {
    match &e {
        RelayCallError::Refused(r)
            if r.kind == sotto_protocol::relay::RelayErrorKind::SessionRevoked =>
        {
            ApiError::new(ErrorKind::SessionRevoked, e.to_string())
        }
        _ => ApiError::new(ErrorKind::Relay, e.to_string()),
    }
}

fn not_a_contact(address: &Address) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        format!("{address} is not a contact: add it with `sotto contact add {address}`"),
    )
    .with("address", address.to_string())
}

impl Service {
    /// `contact.add`: fetches the key from the contact's relay and pins it.
    pub async fn contact_add(&self, p: ContactAddParams) -> Result<Contact, ApiError> {
        self.ensure_active()?;
        let identity = self.identity().await?;
        if p.address == identity.account.address {
            return Err(ApiError::invalid_params(
                "that is this account's own address",
            ));
        }
        let engine = self.engine().await?;
        let relay = RelayUrl::parse(&p.address.host().to_string(), false)
            .map_err(|e| ApiError::new(ErrorKind::InvalidAddress, e.to_string()))?
            .to_string();
        let conn = engine.relays().get(&relay).await.map_err(relay_error)?;
        let account = match conn
            .request(Request::LookupAccount {
                address: p.address.to_string(),
            })
            .await
        {
            Ok(Response::Account(a)) => a,
            Ok(_) => {
                return Err(ApiError::new(
                    ErrorKind::Relay,
                    "unexpected answer from the relay",
                ));
            }
            Err(RelayCallError::Refused(e)) => {
                return Err(
                    ApiError::new(ErrorKind::NotFound, format!("{}: {e}", p.address))
                        .with("address", p.address.to_string()),
                );
            }
            Err(e) => return Err(relay_error(e)),
        };
        let device = account.devices.first().cloned().ok_or_else(|| {
            ApiError::new(ErrorKind::NotFound, format!("{} has no device", p.address))
        })?;
        let (address, alias) = (p.address.clone(), p.alias.clone());
        self.store
            .call(move |db| {
                db.write(|tx| {
                    let a = address.to_string();
                    match model::contact(tx.conn(), &a)? {
                        None => {
                            tx.conn().execute(
                                "INSERT INTO contacts (address, alias, device_id, identity_key, verified, created_at) VALUES (?1, ?2, ?3, ?4, 0, ?5)",
                                params![a, alias, device.device_id, &device.identity_key[..], crate::clock::now_rfc3339()],
                            )?;
                        }
                        Some(_) => {
                            if alias.is_some() {
                                tx.conn().execute("UPDATE contacts SET alias = ?2 WHERE address = ?1", params![a, alias])?;
                            }
                            crate::engine::check_key(tx, &identity.account.address.to_string(), &a, &device.device_id, &device.identity_key)?;
                        }
                    }
                    Ok(model::contact(tx.conn(), &a)?.map(|(c, _, _)| c))
                })
            })
            .await?
            .ok_or_else(|| not_a_contact(&p.address))
    }

    /// `contact.list`.
    pub async fn contact_list(&self) -> Result<Vec<Contact>, ApiError> {
        Ok(self.store.call(|db| model::contacts(db.conn())).await?)
    }

    /// `contact.remove`.
    pub async fn contact_remove(&self, address: &Address) -> Result<(), ApiError> {
        self.ensure_active()?;
        let a = address.to_string();
        let n = self
            .store
            .call(move |db| {
                db.write(|tx| {
                    Ok(tx
                        .conn()
                        .execute("DELETE FROM contacts WHERE address = ?1", [&a])?)
                })
            })
            .await?;
        if n == 0 {
            return Err(not_a_contact(address));
        }
        Ok(())
    }

    /// The key a contact is effectively identified by now (a changed key awaiting
    /// verification, or the pinned one).
    async fn effective_key(&self, address: &Address) -> Result<(Vec<u8>, bool), ApiError> {
        let a = address.to_string();
        let row = self
            .store
            .call(move |db| {
                Ok(db
                    .conn()
                    .query_row(
                        "SELECT identity_key, blocked_key FROM contacts WHERE address = ?1",
                        [&a],
                        |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Option<Vec<u8>>>(1)?)),
                    )
                    .ok())
            })
            .await?;
        match row {
            Some((_, Some(blocked))) => Ok((blocked, true)),
            Some((key, None)) => Ok((key, false)),
            None => Err(not_a_contact(address)),
        }
    }

    /// `contact.safety_number`.
    pub async fn contact_safety_number(&self, address: &Address) -> Result<String, ApiError> {
        let me = self.identity().await?;
        let (key, _) = self.effective_key(address).await?;
        Ok(safety_number(
            (&me.account.address.to_string(), &me.key.public_key()),
            (&address.to_string(), &key),
        ))
    }

    /// `contact.verify`: the user compared safety numbers.
    pub async fn contact_verify(&self, p: ContactVerifyParams) -> Result<Contact, ApiError> {
        self.ensure_active()?;
        let expected = self.contact_safety_number(&p.address).await?;
        let strip = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        if strip(&expected) != strip(&p.safety_number) {
            return Err(ApiError::new(
                ErrorKind::SafetyNumberMismatch,
                format!("the safety number does not match the one for {}", p.address),
            ));
        }
        let (key, _) = self.effective_key(&p.address).await?;
        self.accept_key(&p.address, key, true).await
    }

    /// `contact.trust`: accept a (changed) key by fingerprint without comparing numbers.
    pub async fn contact_trust(&self, p: ContactTrustParams) -> Result<Contact, ApiError> {
        self.ensure_active()?;
        let (key, _) = self.effective_key(&p.address).await?;
        let fp = crate::keys::fingerprint(&key);
        let given: String = p
            .fingerprint
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        if given != fp {
            return Err(ApiError::new(
                ErrorKind::InvalidParams,
                format!(
                    "{}'s current key has the fingerprint {fp}, not {given}",
                    p.address
                ),
            ));
        }
        self.accept_key(&p.address, key, false).await
    }

    async fn accept_key(
        &self,
        address: &Address,
        key: Vec<u8>,
        verified: bool,
    ) -> Result<Contact, ApiError> {
        let a = address.to_string();
        let contact = self
            .store
            .call(move |db| {
                db.write(|tx| {
                    tx.conn().execute(
                        "UPDATE contacts SET identity_key = ?2, blocked_key = NULL, verified = ?3 WHERE address = ?1",
                        params![a, key, verified],
                    )?;
                    Ok(model::contact(tx.conn(), &a)?.map(|(c, _, _)| c))
                })
            })
            .await?;
        contact.ok_or_else(|| not_a_contact(address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safety_numbers_are_symmetric_and_shaped() {
        let a = ("alice@example.org", &[1u8; 32][..]);
        let b = ("bob@example.org", &[2u8; 32][..]);
        let n = safety_number(a, b);
        assert_eq!(n, safety_number(b, a));
        let groups: Vec<&str> = n.split(' ').collect();
        assert_eq!(groups.len(), 12);
        assert!(
            groups
                .iter()
                .all(|g| g.len() == 5 && g.chars().all(|c| c.is_ascii_digit()))
        );
        assert_ne!(n, safety_number(a, ("bob@example.org", &[3u8; 32][..])));
    }
}
