//! 4a. The MLS step of group operations for N members: create + add N in one commit,
//!     join from the Welcome, a self-update, a member processing it, one message sent and
//!     received. Ours: the daemon's way — `sottod::mls::Provider` over a SQLite
//!     transaction per operation, each side's `MlsGroup` kept in memory between them (as
//!     the daemon's conversation actors keep it, `store::Tx::keep`), sottod's group config
//!     and `DeviceKey` signer. Baseline: raw openmls with
//!     openmls_sqlite_storage (the same JSON codec), the group kept in memory, default
//!     config, the same transaction boundaries. Both databases: WAL, synchronous=FULL,
//!     secure_delete=ON (the daemon's pragmas), on the same disk; a second pass with
//!     synchronous=OFF shows the CPU cost alone (fsyncs dominate otherwise).

use std::path::Path;
use std::time::{Duration, Instant};

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::RustCrypto;
use openmls_sqlite_storage::SqliteStorageProvider;
use openmls_traits::OpenMlsProvider;
use rusqlite::Connection;
use sottod::keys::{DbKey, DeviceKey};
use sottod::mls::{self as smls, JsonCodec, Provider};

use crate::relay_client::Device;

const CS: Ciphersuite = smls::DEFAULT_CIPHERSUITE;

/// Times of the steps, in order: create+add, join, self-update, process, message.
pub const STEPS: [&str; 5] = [
    "create+add",
    "join",
    "self-update",
    "process commit",
    "message",
];

pub type Steps = [Duration; 5];

/// The `synchronous` setting of both databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// The daemon's setting: every commit waits for fsync.
    Full,
    /// No fsync: isolates the CPU cost of the two ways.
    Off,
}

/// A database with the daemon's pragmas (but `sync`) and openmls's tables; keyed with
/// SQLCipher as the daemon's when `key` is given.
fn open_db(path: &Path, sync: Sync, key: Option<&DbKey>) -> anyhow::Result<Connection> {
    let mut conn = Connection::open(path)?;
    if let Some(key) = key {
        sottod::store::cipher::key(&conn, key)?;
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let level = match sync {
        Sync::Full => "FULL",
        Sync::Off => "OFF",
    };
    conn.pragma_update(None, "synchronous", level)?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    smls::run_migrations(&mut conn).map_err(anyhow::Error::msg)?;
    Ok(conn)
}

/// Runs `f` in one IMMEDIATE transaction and commits it.
fn in_tx<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Connection) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

/// Public key packages of `n` other members (sottod capabilities), built in memory.
pub fn other_key_packages(n: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    (0..n)
        .map(|i| Device::new(&format!("m{i}@bench.invalid")).key_package())
        .collect()
}

fn validated(crypto: &RustCrypto, kps: &[Vec<u8>]) -> anyhow::Result<Vec<KeyPackage>> {
    kps.iter()
        .map(|b| {
            Ok(KeyPackageIn::tls_deserialize_exact(b)?.validate(crypto, ProtocolVersion::Mls10)?)
        })
        .collect()
}

fn welcome_of(bytes: &[u8]) -> anyhow::Result<Welcome> {
    match MlsMessageIn::tls_deserialize_exact(bytes)?.extract() {
        MlsMessageBodyIn::Welcome(w) => Ok(w),
        _ => anyhow::bail!("not a welcome"),
    }
}

fn protocol_message(bytes: &[u8]) -> anyhow::Result<ProtocolMessage> {
    Ok(MlsMessageIn::tls_deserialize_exact(bytes)?.try_into_protocol_message()?)
}

/// The daemon's way (see the module comment).
pub fn ours(dir: &Path, others: &[Vec<u8>], sync: Sync) -> anyhow::Result<Steps> {
    ours_keyed(dir, others, sync, None)
}

/// [`ours`], both databases SQLCipher-encrypted under `key` when given (as the daemon's).
pub fn ours_keyed(
    dir: &Path,
    others: &[Vec<u8>],
    sync: Sync,
    key: Option<&DbKey>,
) -> anyhow::Result<Steps> {
    let mut creator = open_db(&dir.join("ours-creator.db"), sync, key)?;
    let mut joiner = open_db(&dir.join("ours-joiner.db"), sync, key)?;
    let (ckey, jkey) = (DeviceKey::generate(), DeviceKey::generate());
    let ccred = smls::credential("owner@bench.invalid", "d1", &ckey.public_key());
    let jcred = smls::credential("joiner@bench.invalid", "d1", &jkey.public_key());
    let joiner_kp = in_tx(&mut joiner, |c| {
        let p = Provider::new(c);
        let b = KeyPackage::builder()
            .leaf_node_capabilities(smls::capabilities())
            .build(CS, &p, &jkey, jcred.clone())?;
        Ok(b.key_package().tls_serialize_detached()?)
    })?;
    let mut kps = vec![joiner_kp];
    kps.extend_from_slice(others);
    let gid = GroupId::from_slice(&rand::random::<[u8; 16]>());
    let t = Instant::now();
    let mut group = in_tx(&mut creator, |c| {
        let p = Provider::new(c);
        Ok(MlsGroup::builder()
            .with_group_id(gid.clone())
            .ciphersuite(CS)
            .use_ratchet_tree_extension(true)
            .max_past_epochs(smls::MAX_PAST_EPOCHS)
            .with_wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .with_capabilities(smls::capabilities())
            .with_group_context_extensions(smls::name_extensions(Some("bench")))
            .build(&p, &ckey, ccred.clone())?)
    })?;
    let welcome = in_tx(&mut creator, |c| {
        let p = Provider::new(c);
        let packages = validated(p.crypto(), &kps)?;
        let (_, welcome, _) = group.add_members(&p, &ckey, &packages)?;
        Ok(welcome.tls_serialize_detached()?)
    })?;
    in_tx(&mut creator, |c| {
        Ok(group.merge_pending_commit(&Provider::new(c))?)
    })?;
    let create_add = t.elapsed();

    let t = Instant::now();
    let mut member = in_tx(&mut joiner, |c| {
        let p = Provider::new(c);
        Ok(
            StagedWelcome::new_from_welcome(&p, &smls::join_config(), welcome_of(&welcome)?, None)?
                .into_group(&p)?,
        )
    })?;
    anyhow::ensure!(member.group_id() == &gid, "joined another group");
    let join = t.elapsed();

    let t = Instant::now();
    let commit = in_tx(&mut creator, |c| {
        let p = Provider::new(c);
        let bundle = group.self_update(&p, &ckey, LeafNodeParameters::default())?;
        Ok(bundle.commit().tls_serialize_detached()?)
    })?;
    in_tx(&mut creator, |c| {
        Ok(group.merge_pending_commit(&Provider::new(c))?)
    })?;
    let update = t.elapsed();

    let t = Instant::now();
    in_tx(&mut joiner, |c| {
        let p = Provider::new(c);
        let processed = member.process_message(&p, protocol_message(&commit)?)?;
        match processed.into_content() {
            ProcessedMessageContent::StagedCommitMessage(s) => {
                member.merge_staged_commit(&p, *s)?
            }
            _ => anyhow::bail!("expected a commit"),
        }
        Ok(())
    })?;
    let process = t.elapsed();

    let t = Instant::now();
    let msg = in_tx(&mut creator, |c| {
        let p = Provider::new(c);
        let m = group.create_message(&p, &ckey, &[b'x'; 1024])?;
        Ok(m.tls_serialize_detached()?)
    })?;
    in_tx(&mut joiner, |c| {
        let p = Provider::new(c);
        let processed = member.process_message(&p, protocol_message(&msg)?)?;
        anyhow::ensure!(
            matches!(
                processed.into_content(),
                ProcessedMessageContent::ApplicationMessage(_)
            ),
            "expected an application message"
        );
        Ok(())
    })?;
    let message = t.elapsed();
    Ok([create_add, join, update, process, message])
}

/// A plain openmls provider over a borrowed connection: what an openmls user writes.
struct RawProvider<'a> {
    crypto: RustCrypto,
    storage: SqliteStorageProvider<JsonCodec, &'a Connection>,
}

impl<'a> RawProvider<'a> {
    fn new(conn: &'a Connection) -> RawProvider<'a> {
        RawProvider {
            crypto: RustCrypto::default(),
            storage: SqliteStorageProvider::new(conn),
        }
    }
}

impl<'a> OpenMlsProvider for RawProvider<'a> {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = SqliteStorageProvider<JsonCodec, &'a Connection>;

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

fn raw_signer() -> (SignatureKeyPair, CredentialWithKey) {
    let sk = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let signer = SignatureKeyPair::from_raw(
        SignatureScheme::ED25519,
        sk.to_bytes().to_vec(),
        sk.verifying_key().to_bytes().to_vec(),
    );
    let id = format!("raw{}", rand::random::<u32>());
    let cred = CredentialWithKey {
        credential: BasicCredential::new(id.into_bytes()).into(),
        signature_key: signer.public().into(),
    };
    (signer, cred)
}

/// Raw openmls (see the module comment).
pub fn raw(dir: &Path, others: &[Vec<u8>], sync: Sync) -> anyhow::Result<Steps> {
    let mut creator = open_db(&dir.join("raw-creator.db"), sync, None)?;
    let mut joiner = open_db(&dir.join("raw-joiner.db"), sync, None)?;
    let (csign, ccred) = raw_signer();
    let (jsign, jcred) = raw_signer();
    let joiner_kp = in_tx(&mut joiner, |c| {
        let p = RawProvider::new(c);
        let b = KeyPackage::builder().build(CS, &p, &jsign, jcred.clone())?;
        Ok(b.key_package().tls_serialize_detached()?)
    })?;
    let mut kps = vec![joiner_kp];
    kps.extend_from_slice(others);
    let config = MlsGroupCreateConfig::builder()
        .ciphersuite(CS)
        .use_ratchet_tree_extension(true)
        .build();
    let join_config = MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .build();

    let t = Instant::now();
    let mut group = in_tx(&mut creator, |c| {
        Ok(MlsGroup::new(
            &RawProvider::new(c),
            &csign,
            &config,
            ccred.clone(),
        )?)
    })?;
    let welcome = in_tx(&mut creator, |c| {
        let p = RawProvider::new(c);
        let packages = validated(p.crypto(), &kps)?;
        let (_, welcome, _) = group.add_members(&p, &csign, &packages)?;
        Ok(welcome.tls_serialize_detached()?)
    })?;
    in_tx(&mut creator, |c| {
        Ok(group.merge_pending_commit(&RawProvider::new(c))?)
    })?;
    let create_add = t.elapsed();

    let t = Instant::now();
    let mut member = in_tx(&mut joiner, |c| {
        let p = RawProvider::new(c);
        Ok(
            StagedWelcome::new_from_welcome(&p, &join_config, welcome_of(&welcome)?, None)?
                .into_group(&p)?,
        )
    })?;
    let join = t.elapsed();

    let t = Instant::now();
    let commit = in_tx(&mut creator, |c| {
        let p = RawProvider::new(c);
        let bundle = group.self_update(&p, &csign, LeafNodeParameters::default())?;
        Ok(bundle.commit().tls_serialize_detached()?)
    })?;
    in_tx(&mut creator, |c| {
        Ok(group.merge_pending_commit(&RawProvider::new(c))?)
    })?;
    let update = t.elapsed();

    let t = Instant::now();
    in_tx(&mut joiner, |c| {
        let p = RawProvider::new(c);
        let processed = member.process_message(&p, protocol_message(&commit)?)?;
        match processed.into_content() {
            ProcessedMessageContent::StagedCommitMessage(s) => {
                member.merge_staged_commit(&p, *s)?
            }
            _ => anyhow::bail!("expected a commit"),
        }
        Ok(())
    })?;
    let process = t.elapsed();

    let t = Instant::now();
    let msg = in_tx(&mut creator, |c| {
        let m = group.create_message(&RawProvider::new(c), &csign, &[b'x'; 1024])?;
        Ok(m.tls_serialize_detached()?)
    })?;
    in_tx(&mut joiner, |c| {
        let processed = member.process_message(&RawProvider::new(c), protocol_message(&msg)?)?;
        anyhow::ensure!(
            matches!(
                processed.into_content(),
                ProcessedMessageContent::ApplicationMessage(_)
            ),
            "expected an application message"
        );
        Ok(())
    })?;
    let message = t.elapsed();
    Ok([create_add, join, update, process, message])
}

/// The median of each step over several runs.
pub fn median(runs: &[Steps]) -> Steps {
    let mut out = [Duration::ZERO; 5];
    for (i, slot) in out.iter_mut().enumerate() {
        let mut v: Vec<Duration> = runs.iter().map(|r| r[i]).collect();
        v.sort();
        *slot = v.get(v.len() / 2).copied().unwrap_or_default();
    }
    out
}

pub fn total(s: &Steps) -> Duration {
    s.iter().sum()
}
