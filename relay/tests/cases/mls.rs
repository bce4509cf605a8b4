//! Real MLS objects from openmls for the tests.

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use sotto_protocol::relay::{Principal, RelayError, Request, Response};

use crate::client::{Client, Device, post_id};

pub const CS: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
pub const CS_ID: u16 = 0x0001;
/// The ML-KEM-768 + X25519 hybrid (draft-ietf-mls-pq-ciphersuites).
pub const PQ: Ciphersuite = Ciphersuite::MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519;
pub const PQ_ID: u16 = 0x004F;

/// Key-package options.
#[derive(Default)]
pub struct KpOpts<'a> {
    pub identity: Option<&'a str>,
    pub signer: Option<&'a Device>,
    pub lifetime: Option<Lifetime>,
    pub last_resort: bool,
    /// Default: [`CS`].
    pub ciphersuite: Option<Ciphersuite>,
}

pub fn key_package(dev: &Device, opts: KpOpts<'_>) -> Vec<u8> {
    let identity = opts.identity.map_or_else(|| dev.identity(), str::to_owned);
    let signer = opts.signer.unwrap_or(dev);
    let mut b = KeyPackage::builder();
    if let Some(l) = opts.lifetime {
        b = b.key_package_lifetime(l);
    }
    if opts.last_resort {
        // The extension must also be listed in the leaf's capabilities.
        b = b.mark_as_last_resort().leaf_node_capabilities(
            Capabilities::builder()
                .extensions(vec![ExtensionType::LastResort])
                .build(),
        );
    }
    let bundle = b
        .build(
            opts.ciphersuite.unwrap_or(CS),
            &dev.provider,
            &signer.signer,
            signer.credential_named(&identity),
        )
        .expect("key package");
    bundle
        .key_package()
        .tls_serialize_detached()
        .expect("serialize key package")
}

pub fn kp(dev: &Device) -> Vec<u8> {
    key_package(dev, KpOpts::default())
}

pub fn last_resort(dev: &Device) -> Vec<u8> {
    key_package(
        dev,
        KpOpts {
            last_resort: true,
            ..KpOpts::default()
        },
    )
}

fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CS)
        .use_ratchet_tree_extension(true)
        .build()
}

pub fn new_group(dev: &Device) -> MlsGroup {
    MlsGroup::new(
        &dev.provider,
        &dev.signer,
        &create_config(),
        dev.credential(),
    )
    .expect("group")
}

pub fn ser(m: &MlsMessageOut) -> Vec<u8> {
    m.tls_serialize_detached().expect("serialize message")
}

fn parse_kp(dev: &Device, bytes: &[u8]) -> KeyPackage {
    KeyPackageIn::tls_deserialize_exact(bytes)
        .expect("kp bytes")
        .validate(dev.provider.crypto(), ProtocolVersion::Mls10)
        .expect("valid kp")
}

/// Adds the owner of `kp_bytes`: returns (commit, welcome). The commit stays pending.
pub fn add(group: &mut MlsGroup, dev: &Device, kp_bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let kp = parse_kp(dev, kp_bytes);
    let (commit, welcome, _) = group
        .add_members(&dev.provider, &dev.signer, &[kp])
        .expect("add member");
    (ser(&commit), ser(&welcome))
}

pub fn join(dev: &Device, welcome: &[u8]) -> MlsGroup {
    let msg = MlsMessageIn::tls_deserialize_exact(welcome).expect("welcome bytes");
    let MlsMessageBodyIn::Welcome(w) = msg.extract() else {
        panic!("not a welcome")
    };
    let join_config = MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .build();
    StagedWelcome::new_from_welcome(&dev.provider, &join_config, w, None)
        .expect("staged welcome")
        .into_group(&dev.provider)
        .expect("joined group")
}

/// Removes the member whose credential is `identity`; the commit stays pending.
pub fn remove(group: &mut MlsGroup, dev: &Device, identity: &str) -> Vec<u8> {
    let leaf = group
        .members()
        .find(|m| {
            BasicCredential::try_from(m.credential.clone())
                .is_ok_and(|c| c.identity() == identity.as_bytes())
        })
        .expect("member to remove")
        .index;
    let (commit, _, _) = group
        .remove_members(&dev.provider, &dev.signer, &[leaf])
        .expect("remove");
    ser(&commit)
}

pub fn self_update(group: &mut MlsGroup, dev: &Device) -> Vec<u8> {
    let bundle = group
        .self_update(&dev.provider, &dev.signer, LeafNodeParameters::default())
        .expect("self update");
    ser(bundle.commit())
}

pub fn app_message(group: &mut MlsGroup, dev: &Device, text: &[u8]) -> Vec<u8> {
    ser(&group
        .create_message(&dev.provider, &dev.signer, text)
        .expect("application message"))
}

pub fn merge(group: &mut MlsGroup, dev: &Device) {
    group
        .merge_pending_commit(&dev.provider)
        .expect("merge pending commit");
}

/// Processes someone else's message; merges it if it is a commit.
pub fn process(group: &mut MlsGroup, dev: &Device, bytes: &[u8]) {
    let msg = MlsMessageIn::tls_deserialize_exact(bytes).expect("message bytes");
    let pm = msg.try_into_protocol_message().expect("protocol message");
    let processed = group
        .process_message(&dev.provider, pm)
        .expect("process message");
    match processed.into_content() {
        ProcessedMessageContent::StagedCommitMessage(staged) => group
            .merge_staged_commit(&dev.provider, *staged)
            .expect("merge staged commit"),
        ProcessedMessageContent::ProposalMessage(p) => group
            .store_pending_proposal(dev.provider.storage(), *p)
            .expect("store proposal"),
        _ => {}
    }
}

pub fn gid(group: &MlsGroup) -> Vec<u8> {
    group.group_id().to_vec()
}

pub async fn post(
    c: &mut Client,
    group: &MlsGroup,
    message: Vec<u8>,
    added: Vec<Principal>,
    removed: Vec<Principal>,
) -> Result<Response, RelayError> {
    c.request(Request::PostGroup {
        post_id: post_id(),
        group_id: gid(group),
        message,
        added,
        removed,
    })
    .await
}

/// A group of `dev`'s own that reuses someone else's group id.
pub fn impostor_group(dev: &Device, group_id: &[u8]) -> MlsGroup {
    MlsGroup::builder()
        .with_group_id(GroupId::from_slice(group_id))
        .ciphersuite(CS)
        .use_ratchet_tree_extension(true)
        .build(&dev.provider, &dev.signer, dev.credential())
        .expect("impostor group")
}

pub fn propose_update(group: &mut MlsGroup, dev: &Device) -> Vec<u8> {
    let (msg, _) = group
        .propose_self_update(&dev.provider, &dev.signer, LeafNodeParameters::default())
        .expect("proposal");
    ser(&msg)
}

/// The GroupInfo a commit just built carries for its new epoch (ratchet tree and external
/// public key included: the groups here use the ratchet-tree extension).
pub fn info_of(bundle_info: Option<&openmls::messages::group_info::GroupInfo>) -> Vec<u8> {
    let info = bundle_info.expect("a commit of a ratchet-tree group has a GroupInfo");
    ser(&MlsMessageOut::from(info.clone()))
}

/// Adds the owner of `kp_bytes`: returns (commit, welcome, new epoch's GroupInfo).
pub fn add_with_info(
    group: &mut MlsGroup,
    dev: &Device,
    kp_bytes: &[u8],
) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let kp = parse_kp(dev, kp_bytes);
    let (commit, welcome, info) = group
        .add_members(&dev.provider, &dev.signer, &[kp])
        .expect("add member");
    (ser(&commit), ser(&welcome), info_of(info.as_ref()))
}

/// A self-update commit and its new epoch's GroupInfo; the commit stays pending.
pub fn self_update_with_info(group: &mut MlsGroup, dev: &Device) -> (Vec<u8>, Vec<u8>) {
    let bundle = group
        .self_update(&dev.provider, &dev.signer, LeafNodeParameters::default())
        .expect("self update");
    (ser(bundle.commit()), info_of(bundle.group_info()))
}
