//! Key packages: generated on the writer thread (their private parts go to openmls's
//! storage in the same transaction), published to the home relay, refilled when low.

use std::sync::Arc;
use std::time::Duration;

use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use sotto_protocol::relay::{Request, Response};

use super::Engine;
use crate::keys::DeviceKey;
use crate::mls::{
    self, KEY_PACKAGE_BATCH, KEY_PACKAGE_LOW_WATER, Provider, SUPPORTED_CIPHERSUITES,
};
use crate::relay::{RelayCallError, RelayConn};
use crate::store::StoreError;

/// Serialized key packages for one ciphersuite: single-use ones and a last-resort one.
#[derive(Debug)]
pub struct Batch {
    /// The ciphersuite number.
    pub ciphersuite: u16,
    /// Single-use packages.
    pub packages: Vec<Vec<u8>>,
    /// The last-resort package, if one is wanted.
    pub last_resort: Option<Vec<u8>>,
}

/// Generates `n` single-use packages (and a last-resort one if asked) for `suite`.
pub fn generate(
    conn: &rusqlite::Connection,
    key: &DeviceKey,
    address: &str,
    device_id: &str,
    suite: Ciphersuite,
    n: usize,
    last_resort: bool,
) -> Result<Batch, StoreError> {
    let provider = Provider::new(conn);
    let cred = mls::credential(address, device_id, &key.public_key());
    let build = |resort: bool| -> Result<Vec<u8>, StoreError> {
        let mut builder = KeyPackage::builder().leaf_node_capabilities(mls::capabilities());
        if resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder
            .build(suite, &provider, key, cred.clone())
            .map_err(|e| StoreError::Decode(format!("key package: {e}")))?;
        bundle
            .key_package()
            .tls_serialize_detached()
            .map_err(|e| StoreError::Decode(format!("key package encoding: {e}")))
    };
    let packages = (0..n)
        .map(|_| build(false))
        .collect::<Result<Vec<_>, _>>()?;
    let last_resort = if last_resort {
        Some(build(true)?)
    } else {
        None
    };
    Ok(Batch {
        ciphersuite: u16::from(suite),
        packages,
        last_resort,
    })
}

/// Publishes batches on `conn`.
pub async fn publish(conn: &RelayConn, batches: Vec<Batch>) -> Result<(), RelayCallError> {
    for b in batches {
        conn.request(Request::PublishKeyPackages {
            ciphersuite: b.ciphersuite,
            key_packages: b.packages,
            last_resort: b.last_resort,
        })
        .await?;
    }
    Ok(())
}

/// Keeps every supported ciphersuite's pool above the low-water mark.
pub async fn upkeep(engine: Arc<Engine>) {
    let mut shutdown = engine.shutdown.clone();
    loop {
        if let Err(e) = refill(&engine).await {
            tracing::debug!(cause = %e, "key-package upkeep failed; will retry");
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// One upkeep round.
pub async fn refill(engine: &Arc<Engine>) -> Result<(), String> {
    let conn = engine
        .relays
        .get(engine.relays.home())
        .await
        .map_err(|e| e.to_string())?;
    for suite in SUPPORTED_CIPHERSUITES.iter().copied() {
        let count = conn
            .request(Request::CountKeyPackages {
                ciphersuite: u16::from(suite),
            })
            .await
            .map_err(|e| e.to_string())?;
        let Response::KeyPackageCount(count) = count else {
            return Err("unexpected answer to a count".into());
        };
        if count.available >= KEY_PACKAGE_LOW_WATER && count.last_resort {
            continue;
        }
        let (key, address, device) = (
            engine.key.clone(),
            engine.address.clone(),
            engine.device_id.clone(),
        );
        let want_resort = !count.last_resort;
        let batch = engine
            .store
            .call(move |db| {
                db.write(|tx| {
                    generate(
                        tx.conn(),
                        &key,
                        &address,
                        &device,
                        suite,
                        KEY_PACKAGE_BATCH,
                        want_resort,
                    )
                })
            })
            .await
            .map_err(|e| e.to_string())?;
        publish(&conn, vec![batch])
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(ciphersuite = ?suite, "published key packages");
    }
    Ok(())
}
