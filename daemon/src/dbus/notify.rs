//! Desktop notifications through `org.freedesktop.Notifications` on the session bus.

use std::collections::HashMap;
use std::time::Duration;

use sotto_protocol::api::Message;
use zbus::Connection;
use zbus::zvariant::Value;

/// The longest preview, in characters.
pub const PREVIEW_CHARS: usize = 100;
/// The body when previews are off.
pub const NO_PREVIEW_BODY: &str = "New message";
/// How long a notification server may take to answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends a notification for each received message (when `notify = true`).
#[derive(Debug, Clone)]
pub struct Notifier {
    conn: Connection,
    preview: bool,
}

impl Notifier {
    /// A notifier on `conn`; `preview` puts the start of the text in the body.
    pub fn new(conn: Connection, preview: bool) -> Notifier {
        Notifier { conn, preview }
    }

    /// Shows `message` (app "Sotto", summary the sender) without waiting for the server.
    pub fn notify(&self, message: &Message) {
        let conn = self.conn.clone();
        let summary = message.sender.to_string();
        let body = body(&message.text, self.preview);
        let id = message.id.clone();
        tokio::spawn(async move {
            let hints: HashMap<&str, Value<'_>> = HashMap::new();
            let args = (
                "Sotto",
                0u32,
                "",
                summary.as_str(),
                body.as_str(),
                Vec::<&str>::new(),
                hints,
                -1i32,
            );
            let call = conn.call_method(
                Some("org.freedesktop.Notifications"),
                "/org/freedesktop/Notifications",
                Some("org.freedesktop.Notifications"),
                "Notify",
                &args,
            );
            match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(Ok(_)) => tracing::debug!(message = %id, "notification shown"),
                Ok(Err(e)) => tracing::debug!(message = %id, cause = %e, "notification failed"),
                Err(_) => tracing::debug!(message = %id, "notification server did not answer"),
            }
        });
    }
}

/// The notification body: the text on one line, markup-escaped, cut to [`PREVIEW_CHARS`]
/// characters (`…` marks the cut); [`NO_PREVIEW_BODY`] when previews are off.
pub fn body(text: &str, preview: bool) -> String {
    if !preview {
        return NO_PREVIEW_BODY.to_owned();
    }
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let short: String = if line.chars().count() > PREVIEW_CHARS {
        let mut s: String = line.chars().take(PREVIEW_CHARS - 1).collect();
        s.push('…');
        s
    } else {
        line
    };
    short
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_are_short_single_line_and_escaped() {
        assert_eq!(body("hi\nthere", true), "hi there");
        let long = body(&"é".repeat(500), true);
        assert_eq!(long.chars().count(), PREVIEW_CHARS);
        assert!(long.ends_with('…'));
        assert_eq!(body("a<b>&c", true), "a&lt;b&gt;&amp;c");
        assert_eq!(body("secret text", false), NO_PREVIEW_BODY);
    }
}
