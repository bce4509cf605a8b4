//! Errors the relay returns for a request (or, with request id 0, for the connection).

use serde::{Deserialize, Serialize};

/// An error answer from the relay: a machine-readable kind plus a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayError {
    /// What went wrong; clients key on this.
    pub kind: RelayErrorKind,
    /// A lowercase English explanation for logs and people.
    pub message: String,
}

/// The kinds of relay errors. Variants are only ever appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RelayErrorKind {
    /// The frame could not be decoded (garbage, truncated, wrong message type). The
    /// connection is closed after this error.
    Malformed,
    /// The frame's version byte is not spoken by this relay. `supported` is the inclusive
    /// range of versions it speaks. The connection is closed after this error.
    UnsupportedVersion {
        /// The oldest version the relay speaks.
        min: u8,
        /// The newest version the relay speaks.
        max: u8,
    },
    /// The frame is larger than the relay accepts. The connection is closed.
    TooLarge {
        /// The largest accepted frame in bytes.
        max_bytes: u32,
    },
    /// The request needs an authenticated connection.
    Unauthenticated,
    /// The connection is already authenticated.
    AlreadyAuthenticated,
    /// The authentication or registration proof did not verify (wrong signature, wrong
    /// nonce, a signature for another relay URL, or a key that is not registered for the
    /// claimed local address). A fresh challenge must be requested before trying again.
    BadProof,
    /// The address, name or device id does not follow the grammar, or a registration
    /// names an address on another relay.
    InvalidAddress,
    /// The name is already registered to another key.
    NameTaken,
    /// No such account or device on this relay.
    UnknownAccount,
    /// The principal may not do this (read another device's mailbox, read or post to a
    /// group it is not a member of, publish for another device).
    Forbidden,
    /// A published key package was rejected; `index` is its position in the batch
    /// (`u32::MAX` for the last-resort one).
    BadKeyPackage {
        /// Position of the rejected package in the request.
        index: u32,
    },
    /// No key package (not even a valid last-resort one) is available.
    NoKeyPackage,
    /// The group does not exist.
    UnknownGroup,
    /// A group with this id already exists and the caller is not a member.
    GroupExists,
    /// The MLS message is not a group message this relay accepts: not an MLS
    /// Public/PrivateMessage, an unknown content type, an external proposal or sender,
    /// or a message for another group than the request names.
    BadMessage,
    /// A message's epoch does not match the group's: commits must be at the current
    /// epoch, as must proposals and application messages.
    Conflict {
        /// The group's current epoch.
        current_epoch: u64,
        /// The sequence number of the newest log entry.
        head_seq: u64,
    },
    /// The requested entries were dropped by retention; the oldest retained entry is
    /// `oldest_seq`.
    Gap {
        /// The oldest sequence number still retained.
        oldest_seq: u64,
    },
    /// A rate limit was hit; retry after the given delay.
    RateLimited {
        /// Milliseconds until a retry may succeed.
        retry_after_ms: u64,
    },
    /// A payload is larger than the relay accepts for this kind of post.
    PayloadTooLarge {
        /// The largest accepted payload in bytes.
        max_bytes: u32,
    },
    /// A mailbox recipient is unknown on this relay; `index` is its position.
    UnknownRecipient {
        /// Position of the recipient in the request.
        index: u32,
    },
    /// Too many connections from this address.
    TooManyConnections,
    /// The relay failed internally; the request may be retried.
    Internal,
    /// The request is not valid in this state or with these arguments.
    BadRequest,
    /// This relay registers new accounts only with an invitation from its admin.
    InviteRequired,
    /// The invitation is not valid here: malformed, a bad signature, another relay's,
    /// expired, or used up.
    InviteInvalid,
    /// This install of the device is no longer the account's active one: another install
    /// (a restored backup) took the account over. Sent as the answer to an
    /// authentication, a mailbox subscription or acknowledgement, or as a `Fatal` before
    /// the relay closes the revoked install's open connections.
    SessionRevoked,
    /// A [`super::Request::PostGroupAfter`] whose predecessor (`after`) is not in the
    /// group's log: nothing was stored. Post the predecessor first, then this one again.
    OutOfOrder,
}

impl RelayErrorKind {
    /// A stable snake_case name for this kind (used in logs and metrics).
    pub fn name(&self) -> &'static str {
        match self {
            RelayErrorKind::Malformed => "malformed",
            RelayErrorKind::UnsupportedVersion { .. } => "unsupported_version",
            RelayErrorKind::TooLarge { .. } => "too_large",
            RelayErrorKind::Unauthenticated => "unauthenticated",
            RelayErrorKind::AlreadyAuthenticated => "already_authenticated",
            RelayErrorKind::BadProof => "bad_proof",
            RelayErrorKind::InvalidAddress => "invalid_address",
            RelayErrorKind::NameTaken => "name_taken",
            RelayErrorKind::UnknownAccount => "unknown_account",
            RelayErrorKind::Forbidden => "forbidden",
            RelayErrorKind::BadKeyPackage { .. } => "bad_key_package",
            RelayErrorKind::NoKeyPackage => "no_key_package",
            RelayErrorKind::UnknownGroup => "unknown_group",
            RelayErrorKind::GroupExists => "group_exists",
            RelayErrorKind::BadMessage => "bad_message",
            RelayErrorKind::Conflict { .. } => "conflict",
            RelayErrorKind::Gap { .. } => "gap",
            RelayErrorKind::RateLimited { .. } => "rate_limited",
            RelayErrorKind::PayloadTooLarge { .. } => "payload_too_large",
            RelayErrorKind::UnknownRecipient { .. } => "unknown_recipient",
            RelayErrorKind::TooManyConnections => "too_many_connections",
            RelayErrorKind::Internal => "internal",
            RelayErrorKind::BadRequest => "bad_request",
            RelayErrorKind::InviteRequired => "invite_required",
            RelayErrorKind::InviteInvalid => "invite_invalid",
            RelayErrorKind::SessionRevoked => "session_revoked",
            RelayErrorKind::OutOfOrder => "out_of_order",
        }
    }

    /// Whether the relay closes the connection after sending this error.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            RelayErrorKind::Malformed
                | RelayErrorKind::UnsupportedVersion { .. }
                | RelayErrorKind::TooLarge { .. }
                | RelayErrorKind::TooManyConnections
        )
    }
}

impl RelayError {
    /// Builds an error of `kind` with a message.
    pub fn new(kind: RelayErrorKind, message: impl Into<String>) -> Self {
        RelayError {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for RelayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.message)
    }
}

impl std::error::Error for RelayError {}
