//! The relay wire format: the frames a daemon and `sotto-relay` exchange over a WebSocket.
//!
//! Every WebSocket message is one *binary* frame: a single version byte
//! ([`WIRE_VERSION`]) followed by the [postcard](https://docs.rs/postcard) encoding of a
//! [`ClientFrame`] (client → relay) or a [`ServerFrame`] (relay → client). Enum variants
//! are encoded by their index, so new variants are only ever appended. The full protocol,
//! with its rules for cursors, epochs, access lists and idempotency, is described in
//! `docs/relay-protocol.md`.
//!
//! This module holds types only; encoding and I/O live with their users.

mod auth;
mod error;
mod frames;
mod parse;

pub use auth::{AUTH_LABEL, InstallId, auth_message, credential_identity};
pub use error::{RelayError, RelayErrorKind};
pub use frames::{
    Account, AccountDevice, ClaimedKeyPackage, ClientFrame, DeviceRef, GroupEntry, GroupState,
    Hello, KeyPackageCount, MailboxEntry, MailboxPayload, PostId, Principal, Push, Request,
    Response, ServerFrame, WelcomeEnvelope,
};
pub use parse::parse_client_frame;

/// The version byte that starts every frame (and payload) this build writes.
///
/// Version 2 added the install id and the take-over flag to `Authenticate`, `Register`
/// and `RegisterInvited` (and to the signed proof); every other frame and payload is
/// encoded as in version 1.
pub const WIRE_VERSION: u8 = 2;

/// The oldest version byte [`crate::wire::decode`] reads. Payloads between daemons
/// (envelopes, mailbox payloads) did not change in version 2, so version 1 bytes still
/// decode; relay *frames* older than [`MIN_FRAME_VERSION`] are refused before decoding.
pub const MIN_WIRE_VERSION: u8 = 1;

/// The oldest frame version a relay and a daemon of this build speak to each other
/// (announced in `Hello.min_version`): a version 1 client cannot prove its install.
pub const MIN_FRAME_VERSION: u8 = 2;

/// The HTTP path of the WebSocket endpoint. It stays `/sotto/v1` across frame versions:
/// the relay's canonical URL (signed in proofs, stored in every group record) is an
/// identity, and the frame version byte is what is negotiated.
pub const WS_PATH: &str = "/sotto/v1";

/// The length in bytes of the per-connection authentication nonce.
pub const NONCE_LEN: usize = 32;

/// The most recipients one `PostMailbox` may name; senders split larger sets.
pub const MAX_MAILBOX_RECIPIENTS: usize = 256;

/// The most groups one `ListGroups` answer lists.
pub const MAX_LISTED_GROUPS: usize = 10_000;

/// The length in bytes of a client-chosen post id.
pub const POST_ID_LEN: usize = 16;

/// The MLS content type of a group-log entry, as read by the relay from the MLS framing.
pub mod content_type {
    /// An application message (`ContentType::Application`).
    pub const APPLICATION: u8 = 1;
    /// A proposal (`ContentType::Proposal`).
    pub const PROPOSAL: u8 = 2;
    /// A commit (`ContentType::Commit`).
    pub const COMMIT: u8 = 3;
}
