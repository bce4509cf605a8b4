//! The one place where service errors become D-Bus errors.
//!
//! The error name comes from [`sotto_protocol::ErrorKind::dbus_name`] (the same table as the
//! JSON-RPC codes): `org.sotto.Sotto1.Error.<Kind>`; the body is the message.

use zbus::message::{Header, Message};
use zbus::names::ErrorName;

use crate::service::ApiError;

/// The longest error description sent, in bytes; a longer message (one that quotes a huge
/// argument) is cut at a character boundary.
const MAX_DESCRIPTION: usize = 1024;

/// A D-Bus error reply: `org.sotto.Sotto1.Error.<Kind>` with a message.
#[derive(Debug, Clone)]
pub struct DbusError {
    name: ErrorName<'static>,
    message: String,
}

impl DbusError {
    /// The kind's D-Bus name, e.g. `org.sotto.Sotto1.Error.NotFound`.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<ApiError> for DbusError {
    fn from(e: ApiError) -> Self {
        let name = ErrorName::try_from(e.kind.dbus_name()).unwrap_or_else(|_| {
            // Every kind's name is valid (a unit test checks); this is only a safe default.
            ErrorName::from_str_unchecked("org.sotto.Sotto1.Error.Internal")
        });
        DbusError {
            name,
            message: truncate(e.message, MAX_DESCRIPTION),
        }
    }
}

impl zbus::DBusError for DbusError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        Message::error(call, self.name.as_ref())?.build(&(self.message.as_str(),))
    }

    fn name(&self) -> ErrorName<'_> {
        self.name.as_ref()
    }

    fn description(&self) -> Option<&str> {
        Some(&self.message)
    }
}

impl std::fmt::Display for DbusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl std::error::Error for DbusError {}

/// Shortens `s` to at most `max` bytes at a character boundary, marking the cut with `…`.
fn truncate(mut s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_protocol::ErrorKind;

    #[test]
    fn every_kind_has_a_valid_name() {
        for k in ErrorKind::ALL {
            assert!(ErrorName::try_from(k.dbus_name()).is_ok(), "{k}");
        }
        let e = DbusError::from(ApiError::new(ErrorKind::NotFound, "no such thing"));
        assert_eq!(e.name(), "org.sotto.Sotto1.Error.NotFound");
        assert_eq!(e.message(), "no such thing");
    }

    #[test]
    fn long_messages_are_cut_at_a_char_boundary() {
        let cut = truncate("é".repeat(2000), MAX_DESCRIPTION);
        assert!(cut.len() <= MAX_DESCRIPTION);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short".into(), 10), "short");
    }
}
