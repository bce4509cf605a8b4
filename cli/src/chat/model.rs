//! What the chat shows of the daemon's objects. The daemon owns every count and order; the
//! read-state fields (`unread`, `last_message`, `last_activity_at`) are optional here so the
//! chat also works against a daemon that does not send them yet.

use serde::Deserialize;
use sotto_protocol::api::{Conversation, Message};

/// A conversation as the list shows it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ConvView {
    /// The daemon's conversation object.
    #[serde(flatten)]
    pub conv: Conversation,
    /// Received messages after the read marker (when the daemon reports it).
    #[serde(default)]
    pub unread: Option<u64>,
    /// The newest message (when the daemon reports it).
    #[serde(default)]
    pub last_message: Option<Message>,
    /// Time of the newest message or change (when the daemon reports it).
    #[serde(default)]
    pub last_activity_at: Option<String>,
    /// When this client last saw something happen here (a counter, not a time): among
    /// conversations active within the same second, the latest news sorts first.
    #[serde(skip)]
    pub bumped: u64,
}

impl ConvView {
    /// The conversation id.
    pub fn id(&self) -> &str {
        &self.conv.id
    }

    /// The name, or for an unnamed conversation the other members' addresses.
    pub fn title(&self, me: Option<&str>) -> String {
        if let Some(name) = self.conv.name.as_deref().filter(|n| !n.is_empty()) {
            return name.to_owned();
        }
        let others: Vec<String> = self
            .conv
            .members
            .iter()
            .map(|m| m.to_string())
            .filter(|m| Some(m.as_str()) != me)
            .collect();
        if others.is_empty() {
            self.conv.id.chars().take(12).collect()
        } else {
            others.join(", ")
        }
    }

    /// Takes in a message that just arrived or was sent, as the daemon's own fields would
    /// change: the preview, the activity time and, for a received one, the unread count.
    pub fn note_message(&mut self, m: &Message, received: bool, bump: u64) {
        self.bumped = bump;
        let newer = self
            .last_message
            .as_ref()
            .is_none_or(|old| old.id == m.id || old.position <= m.position || received);
        if newer {
            self.last_message = Some(m.clone());
            self.last_activity_at = Some(activity_time(m).to_owned());
        }
        if received && let Some(n) = self.unread.as_mut() {
            *n += 1;
        }
    }

    /// The sort key of the list: newest activity first.
    pub fn activity(&self) -> &str {
        self.last_activity_at
            .as_deref()
            .or(self.last_message.as_ref().map(activity_time))
            .unwrap_or("")
    }
}

/// When a message happened for this device: received, else sent.
pub fn activity_time(m: &Message) -> &str {
    m.received_at.as_deref().unwrap_or(&m.sent_at)
}

/// Sorts conversations newest activity first (times compared as times, not strings), then
/// the latest news this client saw, else keeping the daemon's order.
pub fn sort_by_activity(list: &mut [ConvView]) {
    list.sort_by_cached_key(|c| {
        let t = c
            .activity()
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_nanosecond())
            .unwrap_or(i128::MIN);
        (std::cmp::Reverse(t), std::cmp::Reverse(c.bumped))
    });
}

/// Merges `incoming` into `history` (ordered by log position, queued last): replaces
/// messages with the same id, adds new ones. Returns how many were new.
pub fn merge_messages(history: &mut Vec<Message>, incoming: Vec<Message>) -> usize {
    let index: std::collections::HashMap<String, usize> = history
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id.clone(), i))
        .collect();
    let mut added = 0;
    for m in incoming {
        match index.get(&m.id) {
            Some(&i) => history[i] = m,
            None => {
                history.push(m);
                added += 1;
            }
        }
    }
    history.sort_by_key(|m| m.position);
    added
}
