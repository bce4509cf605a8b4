//! Error kinds of the local API and their codes.
//!
//! Every error a Sotto method returns carries a JSON-RPC code and `data.kind`, a snake_case
//! string that clients key on. The D-Bus adapter names its errors
//! `org.sotto.Sotto1.Error.<Kind>` from the same table: this module is the one place where
//! kinds, codes and D-Bus names are mapped.

use serde::{Deserialize, Serialize};

macro_rules! error_kinds {
    ($( $(#[$doc:meta])* $variant:ident = ($code:expr, $name:literal), )*) => {
        /// The kind of a Sotto error: `data.kind` on the wire.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(rename_all = "snake_case")]
        #[non_exhaustive]
        pub enum ErrorKind {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorKind {
            /// Every kind, in code order (for documentation and tests).
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$variant,)*];

            /// The JSON-RPC error code of this kind.
            pub const fn code(self) -> i32 {
                match self { $(ErrorKind::$variant => $code,)* }
            }

            /// The snake_case name, as in `data.kind`.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorKind::$variant => $name,)* }
            }
        }
    };
}

error_kinds! {
    /// Unparseable JSON (JSON-RPC -32700).
    ParseError = (-32700, "parse_error"),
    /// Not a valid JSON-RPC request object, an empty batch, or a line over the size limit (-32600).
    InvalidRequest = (-32600, "invalid_request"),
    /// No such method (-32601).
    MethodNotFound = (-32601, "method_not_found"),
    /// Params of the wrong shape, a wrong type or an unknown field (-32602).
    InvalidParams = (-32602, "invalid_params"),
    /// A bug or an unexpected failure inside the daemon (-32603).
    Internal = (-32603, "internal"),
    /// The named thing (account, contact, conversation, message, subscription) does not exist.
    NotFound = (-32000, "not_found"),
    /// This daemon has no account yet: run `sotto account create`.
    NoAccount = (-32001, "no_account"),
    /// An account already exists on this daemon.
    AccountExists = (-32002, "account_exists"),
    /// An address or relay URL that breaks the grammar.
    InvalidAddress = (-32003, "invalid_address"),
    /// The configured key store cannot be reached (no Secret Service, no session keyring, ...).
    KeyStoreUnavailable = (-32004, "key_store_unavailable"),
    /// The key store was reached but refused or failed the operation.
    KeyStore = (-32005, "key_store"),
    /// The daemon's local database failed.
    Storage = (-32006, "storage"),
    /// A relay could not be reached or refused the request.
    Relay = (-32007, "relay"),
    /// A text over `max_text_bytes`.
    TooLong = (-32008, "too_long"),
    /// A conversation reference matches several conversations; `data.candidates` lists them.
    Ambiguous = (-32009, "ambiguous"),
    /// Members cannot be added to a direct conversation.
    DirectConversation = (-32010, "direct_conversation"),
    /// An idempotency key reused with different params.
    IdempotencyConflict = (-32011, "idempotency_conflict"),
    /// The safety number given does not match.
    SafetyNumberMismatch = (-32012, "safety_number_mismatch"),
    /// A verified contact's key changed: sending is blocked until it is verified or trusted.
    IdentityUntrusted = (-32013, "identity_untrusted"),
    /// `since` is older than the retained event backlog; `data.oldest_seq` says where it starts.
    EventsExpired = (-32014, "events_expired"),
    /// The daemon is shutting down and accepts no new work.
    ShuttingDown = (-32015, "shutting_down"),
    /// The operation is not valid in the object's current state.
    InvalidState = (-32016, "invalid_state"),
    /// The socket peer runs as another user.
    PermissionDenied = (-32017, "permission_denied"),
    /// The daemon's data directory is full or read-only: nothing was written; reads keep
    /// working and writes succeed again by themselves once space returns.
    StorageFull = (-32018, "storage_full"),
    /// The relay registers new accounts only with an invitation (`--invite TOKEN`).
    InviteRequired = (-32030, "invite_required"),
    /// The invitation was refused: malformed, a bad signature, another relay's, expired or
    /// used up.
    InviteInvalid = (-32031, "invite_invalid"),
    /// The backup's passphrase is wrong (nothing was changed).
    BadPassphrase = (-32040, "bad_passphrase"),
    /// The backup file is damaged, truncated or not a Sotto backup (nothing was changed).
    BackupCorrupt = (-32041, "backup_corrupt"),
    /// This install was taken over by another (a restored backup); it no longer sends.
    SessionRevoked = (-32042, "session_revoked"),
}

impl ErrorKind {
    /// The D-Bus error name: `org.sotto.Sotto1.Error.<CamelCase kind>`.
    pub fn dbus_name(self) -> String {
        let mut out = String::from("org.sotto.Sotto1.Error.");
        for part in self.as_str().split('_') {
            let mut chars = part.chars();
            if let Some(first) = chars.next() {
                out.extend(first.to_uppercase());
                out.push_str(chars.as_str());
            }
        }
        out
    }

    /// Finds the kind whose `as_str` is `name`.
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        Self::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_in_range() {
        let mut seen = std::collections::HashSet::new();
        for k in ErrorKind::ALL {
            assert!(seen.insert(k.code()), "duplicate code {}", k.code());
            let standard = [-32700, -32600, -32601, -32602, -32603].contains(&k.code());
            assert!(
                standard || (-32099..=-32000).contains(&k.code()),
                "{k} out of range"
            );
            let json = serde_json::to_value(k).unwrap();
            assert_eq!(json, k.as_str());
            assert_eq!(ErrorKind::from_name(k.as_str()), Some(*k));
        }
    }

    #[test]
    fn dbus_names() {
        assert_eq!(
            ErrorKind::SafetyNumberMismatch.dbus_name(),
            "org.sotto.Sotto1.Error.SafetyNumberMismatch"
        );
        assert_eq!(
            ErrorKind::NotFound.dbus_name(),
            "org.sotto.Sotto1.Error.NotFound"
        );
    }
}
