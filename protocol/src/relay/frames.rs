//! The frames of the relay protocol. See `docs/relay-protocol.md` for the rules.

use serde::{Deserialize, Serialize};

use super::{InstallId, RelayError};

/// A client-chosen 16-byte id that makes a post idempotent per principal.
pub type PostId = [u8; 16];

/// A principal: a device's Ed25519 public key (32 bytes), which is also its MLS
/// signature key.
pub type Principal = [u8; 32];

/// A frame from a client to the relay: a request with a client-chosen id that the
/// relay echoes in its [`ServerFrame::Response`]. Ids should be unique per connection
/// and non-zero (id 0 is used by the relay for connection-level errors).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// Echoed in the response.
    pub id: u64,
    /// What the client asks for.
    pub request: Request,
}

/// A frame from the relay to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ServerFrame {
    /// The first frame on every connection: versions, identity, first challenge.
    Hello(Hello),
    /// The answer to the request with the same id.
    Response {
        /// The id of the request.
        id: u64,
        /// The result or an error.
        result: Result<Response, RelayError>,
    },
    /// An unsolicited delivery for a subscription.
    Push(Push),
    /// A connection-level error (undecodable frame, wrong version, oversized frame);
    /// the relay closes the connection after it.
    Fatal(RelayError),
}

/// The relay's greeting, sent before anything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The oldest wire version the relay speaks.
    pub min_version: u8,
    /// The newest wire version the relay speaks.
    pub max_version: u8,
    /// The relay's canonical public URL; authentication proofs sign exactly this string.
    pub relay_url: String,
    /// The first single-use authentication challenge of this connection.
    pub nonce: [u8; 32],
    /// The largest frame the relay accepts, in bytes.
    pub max_frame_bytes: u32,
    /// Software name and version, informational.
    pub server: String,
}

/// A reference to one device's mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceRef {
    /// The account address `name@host[:port]`.
    pub address: String,
    /// The device id.
    pub device_id: String,
}

/// The requests a client can make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Request {
    /// Ask for a fresh authentication challenge (replacing the current one).
    /// Answer: [`Response::Challenge`].
    Challenge,
    /// Prove possession of `public_key` for `address/device_id`. For an address on this
    /// relay the key must be the registered one, and `install_id` the device's active
    /// install (the first install to authenticate becomes the active one; `take_over`
    /// makes this install the active one and revokes the others: `session_revoked`);
    /// for an address elsewhere the proof alone makes the connection a *foreign*
    /// principal (the install is not recorded there). Answer: [`Response::Authenticated`].
    Authenticate {
        /// The claimed address.
        address: String,
        /// The claimed device id.
        device_id: String,
        /// The device's Ed25519 public key.
        public_key: Principal,
        /// Which install of the device this is (wire version 2).
        install_id: InstallId,
        /// Make this install the device's active one, revoking every other (a restored
        /// backup taking the account over; wire version 2).
        take_over: bool,
        /// Ed25519 signature over [`super::auth_message`].
        signature: Vec<u8>,
    },
    /// Register `address` (whose host must be this relay's) for this device and key, and
    /// authenticate. Repeating a registration with the same key and device succeeds.
    /// Answer: [`Response::Authenticated`].
    Register {
        /// The address to register.
        address: String,
        /// The device id.
        device_id: String,
        /// The device's Ed25519 public key.
        public_key: Principal,
        /// Which install of the device this is (as in [`Request::Authenticate`]).
        install_id: InstallId,
        /// Take the account over (as in [`Request::Authenticate`]).
        take_over: bool,
        /// Ed25519 signature over [`super::auth_message`].
        signature: Vec<u8>,
    },
    /// Look up an account's devices and identity keys. Answer: [`Response::Account`].
    LookupAccount {
        /// The address to look up (on this relay).
        address: String,
    },
    /// Publish key packages for the authenticated device (local principals only): a pool
    /// of single-use packages plus optionally a last-resort one (which replaces the
    /// previous last-resort package). Answer: [`Response::KeyPackageCount`].
    PublishKeyPackages {
        /// The MLS ciphersuite of every package in this request.
        ciphersuite: u16,
        /// TLS-serialized MLS `KeyPackage`s without the `last_resort` extension.
        key_packages: Vec<Vec<u8>>,
        /// A TLS-serialized `KeyPackage` with the `last_resort` extension.
        last_resort: Option<Vec<u8>>,
    },
    /// How many single-use packages remain for the authenticated device.
    /// Answer: [`Response::KeyPackageCount`].
    CountKeyPackages {
        /// The ciphersuite to count.
        ciphersuite: u16,
    },
    /// Claim one key package of a device: each single-use package is handed out once;
    /// when none is left, the last-resort one. Answer: [`Response::KeyPackage`].
    ClaimKeyPackage {
        /// The device whose package is claimed.
        device: DeviceRef,
        /// The ciphersuite wanted.
        ciphersuite: u16,
    },
    /// Store one payload (for example a Welcome envelope) in the mailboxes of one or more
    /// devices on this relay; stored once and referenced. Answer: [`Response::Posted`].
    PostMailbox {
        /// Idempotency key.
        post_id: PostId,
        /// The recipient devices (all on this relay).
        recipients: Vec<DeviceRef>,
        /// The opaque payload.
        payload: Vec<u8>,
    },
    /// Stream a mailbox from entries with `seq > after`, then live. Only the device that
    /// owns the mailbox (the authenticated local principal) may name it.
    /// Answer: [`Response::Ok`], then [`Push::Mailbox`] frames.
    SubscribeMailbox {
        /// The mailbox: the authenticated device itself.
        device: DeviceRef,
        /// The cursor: the last seq already processed (0 for all).
        after: u64,
    },
    /// Delete every mailbox entry with `seq <= up_to` (owner only). Answer: [`Response::Ok`].
    AckMailbox {
        /// The mailbox: the authenticated device itself.
        device: DeviceRef,
        /// The highest processed seq.
        up_to: u64,
    },
    /// Create a group log at epoch 0 with the caller as its only member.
    /// Answer: [`Response::Group`].
    CreateGroup {
        /// The MLS group id.
        group_id: Vec<u8>,
    },
    /// Append an MLS message to a group log under the epoch rule.
    /// Answer: [`Response::Accepted`] or error `conflict`.
    PostGroup {
        /// Idempotency key.
        post_id: PostId,
        /// The MLS group id; must match the message's framing.
        group_id: Vec<u8>,
        /// A TLS-serialized `MlsMessage` (PublicMessage or PrivateMessage).
        message: Vec<u8>,
        /// For a commit: principals it adds to the access list.
        added: Vec<Principal>,
        /// For a commit: principals it removes from the access list.
        removed: Vec<Principal>,
    },
    /// Read group-log entries with `seq > after`. Answer: [`Response::GroupEntries`].
    ReadGroup {
        /// The MLS group id.
        group_id: Vec<u8>,
        /// The cursor.
        after: u64,
        /// At most this many entries (the relay may return fewer).
        limit: u32,
    },
    /// Stream a group log from `seq > after`, then live. Answer: [`Response::Ok`], then
    /// [`Push::Group`] frames.
    SubscribeGroup {
        /// The MLS group id.
        group_id: Vec<u8>,
        /// The cursor.
        after: u64,
    },
    /// Stop streaming a group log. Answer: [`Response::Ok`].
    UnsubscribeGroup {
        /// The MLS group id.
        group_id: Vec<u8>,
    },
    /// Record that the caller has durably processed the log up to `seq` (retention keeps
    /// every entry some member has not acknowledged). Answer: [`Response::Ok`].
    AckGroup {
        /// The MLS group id.
        group_id: Vec<u8>,
        /// The highest processed seq.
        seq: u64,
    },
    /// The group's epoch and sequence bounds. Answer: [`Response::Group`].
    GroupInfo {
        /// The MLS group id.
        group_id: Vec<u8>,
    },
    /// Liveness check. Answer: [`Response::Pong`].
    Ping,
    /// [`Request::Register`] with an invitation, for invite-only relays: a token made by
    /// `sotto-relay invite create`, signed by this relay's admin key. The use is counted in
    /// the registration's transaction; re-registering the same device and key uses nothing.
    /// A relay that is not invite-only ignores the invitation.
    /// Answer: [`Response::Authenticated`].
    RegisterInvited {
        /// The address to register.
        address: String,
        /// The device id.
        device_id: String,
        /// The device's Ed25519 public key.
        public_key: Principal,
        /// Which install of the device this is (as in [`Request::Authenticate`]).
        install_id: InstallId,
        /// Take the account over (as in [`Request::Authenticate`]).
        take_over: bool,
        /// Ed25519 signature over [`super::auth_message`].
        signature: Vec<u8>,
        /// The invitation token (`sotto-invite1.…`).
        invite: String,
    },
    /// The groups on this relay whose access list holds the caller as a current member
    /// (at most [`super::MAX_LISTED_GROUPS`], by group id), for an install that lost
    /// track of its groups (a restored backup: groups joined after the backup).
    /// Answer: [`Response::Groups`].
    ListGroups,
    /// [`Request::PostGroup`] of a commit together with the GroupInfo of the epoch it
    /// creates (a TLS-serialized `MlsMessage` carrying a GroupInfo with the ratchet-tree and
    /// external-public-key extensions), stored in the same transaction as the entry; the
    /// group's latest GroupInfo lets an install of a member's device rejoin by external
    /// commit (the resync after a takeover). Answer: [`Response::Accepted`].
    PostCommit {
        /// Idempotency key.
        post_id: PostId,
        /// The MLS group id; must match the message's and the GroupInfo's.
        group_id: Vec<u8>,
        /// A TLS-serialized `MlsMessage` carrying a commit.
        message: Vec<u8>,
        /// Principals the commit adds to the access list.
        added: Vec<Principal>,
        /// Principals the commit removes from the access list.
        removed: Vec<Principal>,
        /// The new epoch's GroupInfo (`MlsMessage`), for epoch `message epoch + 1`.
        group_info: Vec<u8>,
    },
    /// The group's latest GroupInfo, for current members (principals on the access list)
    /// only. Answer: [`Response::GroupInfoMessage`], or `unknown_group` when none is
    /// stored.
    GetGroupInfo {
        /// The MLS group id.
        group_id: Vec<u8>,
    },
    /// [`Request::PostGroup`] of an application message or proposal (no access-list
    /// delta) with an order precondition: stored only if the sender's post `after` to
    /// this group is already in its log. Otherwise refused `out_of_order`, nothing stored
    /// (a retry of a post stored earlier still answers its original result). A client that
    /// pipelines posts names each one's predecessor, so a refusal in the middle of a run
    /// (`rate_limited`, `internal`, a storage failure) cannot let a later post of the run
    /// into the log ahead of it. Answer: [`Response::Accepted`].
    PostGroupAfter {
        /// Idempotency key.
        post_id: PostId,
        /// The MLS group id; must match the message's framing.
        group_id: Vec<u8>,
        /// A TLS-serialized `MlsMessage` (PublicMessage or PrivateMessage).
        message: Vec<u8>,
        /// The post id of the sender's post that must already be in the group's log.
        after: PostId,
    },
}

/// Successful answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    /// A fresh single-use challenge.
    Challenge {
        /// The nonce to sign.
        nonce: [u8; 32],
    },
    /// The connection is authenticated.
    Authenticated {
        /// Whether the address is registered on this relay (false: a foreign principal).
        local: bool,
    },
    /// An account's devices.
    Account(Account),
    /// Key packages remaining for a device and ciphersuite.
    KeyPackageCount(KeyPackageCount),
    /// A claimed key package.
    KeyPackage(ClaimedKeyPackage),
    /// A mailbox post was stored (or had already been stored under this post id).
    Posted {
        /// The mailbox seq assigned in each recipient's mailbox, in request order.
        seqs: Vec<u64>,
    },
    /// Done.
    Ok,
    /// A group's state.
    Group(GroupState),
    /// A group post was appended (or had already been, under this post id).
    Accepted {
        /// The entry's sequence number in the group log.
        seq: u64,
        /// The group's epoch after this entry (E+1 for a commit at E, else E).
        epoch: u64,
    },
    /// Group-log entries.
    GroupEntries {
        /// Entries in seq order.
        entries: Vec<GroupEntry>,
        /// For a removed principal: the seq of the commit that removed it; nothing after
        /// it will ever be returned.
        removed_at: Option<u64>,
        /// The newest seq of the log (readable or not).
        head_seq: u64,
    },
    /// The answer to [`Request::Ping`].
    Pong,
    /// The answer to [`Request::ListGroups`].
    Groups {
        /// The groups' states, by group id.
        groups: Vec<GroupState>,
    },
    /// The answer to [`Request::GetGroupInfo`]: the GroupInfo posted with the newest
    /// commit that carried one.
    GroupInfoMessage {
        /// The epoch the GroupInfo describes (the commit's epoch + 1).
        epoch: u64,
        /// The log seq of the commit it was posted with.
        seq: u64,
        /// The TLS-serialized `MlsMessage` carrying the GroupInfo.
        group_info: Vec<u8>,
    },
}

/// Unsolicited deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Push {
    /// New mailbox entries, in seq order.
    Mailbox {
        /// The entries.
        entries: Vec<MailboxEntry>,
    },
    /// New group-log entries, in seq order.
    Group {
        /// The MLS group id.
        group_id: Vec<u8>,
        /// The entries.
        entries: Vec<GroupEntry>,
        /// Set once the streamed principal's removal commit has been delivered; the
        /// subscription ends.
        removed_at: Option<u64>,
    },
    /// A subscription ended with an error (for example `gap`).
    GroupError {
        /// The MLS group id.
        group_id: Vec<u8>,
        /// Why.
        error: RelayError,
    },
}

/// An account and its devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The address.
    pub address: String,
    /// Its devices.
    pub devices: Vec<AccountDevice>,
}

/// One device of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountDevice {
    /// The device id.
    pub device_id: String,
    /// The device's Ed25519 identity (MLS signature) key.
    pub identity_key: Principal,
}

/// How many key packages a device has left for a ciphersuite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPackageCount {
    /// The ciphersuite.
    pub ciphersuite: u16,
    /// Unclaimed single-use packages that are still valid.
    pub available: u32,
    /// Whether a valid last-resort package is present.
    pub last_resort: bool,
}

/// A key package handed out by a claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimedKeyPackage {
    /// The TLS-serialized `KeyPackage`.
    pub key_package: Vec<u8>,
    /// Whether it is the (reusable) last-resort package.
    pub last_resort: bool,
}

/// A group log's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// The MLS group id.
    pub group_id: Vec<u8>,
    /// The current epoch.
    pub epoch: u64,
    /// The newest seq (0 when empty).
    pub head_seq: u64,
    /// The oldest retained seq (`head_seq + 1` when none is retained).
    pub oldest_seq: u64,
}

/// One entry of a group log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntry {
    /// Position in the log, from 1, without holes.
    pub seq: u64,
    /// The MLS epoch the message was sent in (read from its framing).
    pub epoch: u64,
    /// The MLS content type (see [`super::content_type`]).
    pub content_type: u8,
    /// The posting principal.
    pub sender: Principal,
    /// The post id the sender chose; senders recognise their own entries by it.
    pub post_id: PostId,
    /// The TLS-serialized `MlsMessage` exactly as posted.
    pub message: Vec<u8>,
}

/// One mailbox entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxEntry {
    /// Position in the device's mailbox (increasing, not necessarily contiguous).
    pub seq: u64,
    /// The authenticated sender's key.
    pub sender: Principal,
    /// The sender's authenticated claimed address (for a foreign principal, unverified
    /// beyond its key proof).
    pub sender_address: String,
    /// The sender's post id.
    pub post_id: PostId,
    /// The opaque payload.
    pub payload: Vec<u8>,
    /// When the relay stored it, in seconds since the Unix epoch.
    pub stored_at: u64,
}

/// What daemons put in a mailbox payload, encoded like frames (`WIRE_VERSION ‖
/// postcard`). The relay never looks inside; the type lives here so both sides agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MailboxPayload {
    /// An invitation to a group, posted after the relay accepted the adding commit.
    Welcome(WelcomeEnvelope),
}

/// A Welcome with where to find the group's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WelcomeEnvelope {
    /// The canonical URL of the relay holding the group log.
    pub relay_url: String,
    /// The MLS group id.
    pub group_id: Vec<u8>,
    /// The first log seq the joiner reads: the accepted commit's seq + 1.
    pub join_seq: u64,
    /// The TLS-serialized `MlsMessage` carrying the Welcome.
    pub welcome: Vec<u8>,
}
