//! `org.sotto.Sotto1` through GIO's D-Bus: a `GDBusProxy` that carries the interface from the
//! checked-in introspection XML (so GIO checks every reply's and signal's signature against
//! it), and the `a{sv}` dicts of docs/dbus.md turned into plain Rust values.

use std::collections::HashMap;

use gtk::gio;
use gtk::gio::prelude::*;
use gtk::glib;

pub const NAME: &str = "org.sotto.Sotto1";
pub const PATH: &str = "/org/sotto/Sotto1";
pub const IFACE: &str = "org.sotto.Sotto1";

/// The interface as the daemon serves it (kept in sync by the daemon's drift test).
pub const INTROSPECTION: &str = include_str!("../../docs/dbus-introspection.xml");

/// How long one call may take (ms): sends and membership changes return once queued.
const TIMEOUT_MS: i32 = 30_000;

/// The `org.sotto.Sotto1` interface description parsed from [`INTROSPECTION`].
pub fn interface_info() -> Result<gio::DBusInterfaceInfo, String> {
    let node = gio::DBusNodeInfo::for_xml(INTROSPECTION).map_err(|e| e.to_string())?;
    node.lookup_interface(IFACE)
        .ok_or_else(|| format!("{IFACE} is not in the introspection XML"))
}

/// An error from a call: the D-Bus error name's last part (`NoAccount`, `UnknownMethod`, …)
/// and the message.
#[derive(Debug, Clone)]
pub struct CallError {
    pub kind: String,
    pub message: String,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl CallError {
    fn from_glib(mut e: glib::Error) -> CallError {
        let name = gio::DBusError::remote_error(&e).map(|s| s.to_string());
        gio::DBusError::strip_remote_error(&mut e);
        let kind = match name {
            Some(n) => n.rsplit('.').next().unwrap_or_default().to_owned(),
            None if e.matches(gio::IOErrorEnum::TimedOut) => "TimedOut".to_owned(),
            None => "Failed".to_owned(),
        };
        CallError {
            kind,
            message: e.message().to_owned(),
        }
    }
}

/// The proxy; cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    pub proxy: gio::DBusProxy,
}

/// `a{sv}` options / arguments.
pub type Options = HashMap<String, glib::Variant>;

pub fn no_options() -> Options {
    HashMap::new()
}

impl Client {
    /// A proxy for the daemon on `conn`. Without `DO_NOT_AUTO_START`, GIO asks the bus to
    /// start the daemon (D-Bus activation) when nobody owns the name yet.
    pub async fn new(conn: &gio::DBusConnection) -> Result<Client, CallError> {
        let info = interface_info().map_err(|message| CallError {
            kind: "Introspection".into(),
            message,
        })?;
        let proxy = gio::DBusProxy::new_future(
            conn,
            gio::DBusProxyFlags::NONE,
            Some(&info),
            Some(NAME),
            PATH,
            IFACE,
        )
        .await
        .map_err(CallError::from_glib)?;
        proxy.set_default_timeout(TIMEOUT_MS);
        Ok(Client { proxy })
    }

    /// Calls `method` with `args` (a tuple variant); the reply's first value.
    pub async fn call(
        &self,
        method: &str,
        args: glib::Variant,
    ) -> Result<glib::Variant, CallError> {
        let reply = self
            .proxy
            .call_future(method, Some(&args), gio::DBusCallFlags::NONE, TIMEOUT_MS)
            .await
            .map_err(CallError::from_glib)?;
        if reply.n_children() == 0 {
            return Err(CallError {
                kind: "Failed".into(),
                message: format!("{method} returned nothing"),
            });
        }
        Ok(reply.child_value(0))
    }

    /// A method returning `a{sv}`.
    pub async fn call_dict(&self, method: &str, args: glib::Variant) -> Result<Dict, CallError> {
        let v = self.call(method, args).await?;
        Dict::from_variant(&v).ok_or_else(|| bad_reply(method))
    }

    /// A method returning `aa{sv}`.
    pub async fn call_list(
        &self,
        method: &str,
        args: glib::Variant,
    ) -> Result<Vec<Dict>, CallError> {
        let v = self.call(method, args).await?;
        v.get::<Vec<HashMap<String, glib::Variant>>>()
            .map(|l| l.into_iter().map(Dict).collect())
            .ok_or_else(|| bad_reply(method))
    }

    pub async fn status(&self) -> Result<Dict, CallError> {
        self.call_dict("Status", (no_options(),).to_variant()).await
    }

    pub async fn account(&self) -> Result<Dict, CallError> {
        self.call_dict("AccountInfo", (no_options(),).to_variant())
            .await
    }

    pub async fn conversations(&self) -> Result<Vec<Conversation>, CallError> {
        let l = self
            .call_list("ListConversations", (no_options(),).to_variant())
            .await?;
        Ok(l.iter().map(Conversation::from_dict).collect())
    }

    pub async fn conversation(&self, id: &str) -> Result<Conversation, CallError> {
        let d = self
            .call_dict("GetConversation", (id, no_options()).to_variant())
            .await?;
        Ok(Conversation::from_dict(&d))
    }

    /// Up to `limit` messages before `before` (a message id), oldest first.
    pub async fn messages(
        &self,
        conv: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Message>, CallError> {
        let mut o = no_options();
        o.insert("limit".into(), limit.to_variant());
        if let Some(b) = before {
            o.insert("before".into(), b.to_variant());
        }
        let l = self
            .call_list("ListMessages", (conv, o).to_variant())
            .await?;
        Ok(l.iter().map(Message::from_dict).collect())
    }

    pub async fn send(&self, conv: &str, text: &str, key: &str) -> Result<Message, CallError> {
        let mut o = no_options();
        o.insert("idempotency_key".into(), key.to_variant());
        let d = self
            .call_dict("SendMessage", (conv, text, o).to_variant())
            .await?;
        Ok(Message::from_dict(&d))
    }

    pub async fn create(
        &self,
        members: &[String],
        name: Option<&str>,
    ) -> Result<Conversation, CallError> {
        let mut o = no_options();
        if let Some(n) = name {
            o.insert("name".into(), n.to_variant());
        }
        let d = self
            .call_dict("CreateConversation", (members.to_vec(), o).to_variant())
            .await?;
        Ok(Conversation::from_dict(&d))
    }

    pub async fn change_members(
        &self,
        add: bool,
        conv: &str,
        members: &[String],
    ) -> Result<(), CallError> {
        let m = if add { "AddMembers" } else { "RemoveMembers" };
        self.call_dict(m, (conv, members.to_vec(), no_options()).to_variant())
            .await
            .map(|_| ())
    }

    pub async fn rename(&self, conv: &str, name: &str) -> Result<(), CallError> {
        self.call_dict(
            "RenameConversation",
            (conv, name, no_options()).to_variant(),
        )
        .await
        .map(|_| ())
    }

    pub async fn leave(&self, conv: &str) -> Result<(), CallError> {
        self.call_dict("LeaveConversation", (conv, no_options()).to_variant())
            .await
            .map(|_| ())
    }

    /// `MarkRead(s conversation, a{sv} options)`: everything so far is read; the
    /// conversation with its recomputed `unread`.
    pub async fn mark_read(&self, conv: &str) -> Result<Conversation, CallError> {
        let d = self
            .call_dict("MarkRead", (conv, no_options()).to_variant())
            .await?;
        Ok(Conversation::from_dict(&d))
    }

    /// `CreateAccount(s name, s relay, a{sv} options)`; `invite` for an invite-only relay.
    pub async fn create_account(
        &self,
        name: &str,
        relay: &str,
        invite: Option<&str>,
    ) -> Result<Dict, CallError> {
        let mut o = no_options();
        if let Some(i) = invite {
            o.insert("invite".into(), i.to_variant());
        }
        self.call_dict("CreateAccount", (name, relay, o).to_variant())
            .await
    }

    pub async fn safety_number(&self, address: &str) -> Result<Dict, CallError> {
        self.call_dict("SafetyNumber", (address, no_options()).to_variant())
            .await
    }

    pub async fn verify(&self, address: &str, safety_number: &str) -> Result<Dict, CallError> {
        self.call_dict(
            "VerifyContact",
            (address, safety_number, no_options()).to_variant(),
        )
        .await
    }

    /// Whether `address` is a verified contact.
    pub async fn verified(&self, address: &str) -> Result<bool, CallError> {
        let l = self
            .call_list("ListContacts", (no_options(),).to_variant())
            .await?;
        Ok(l.iter().any(|c| {
            c.str("address").as_deref() == Some(address) && c.bool("verified") == Some(true)
        }))
    }

    /// `SearchMessages(query, {limit})`: the hits, best first, each with its snippet
    /// (matched words between `[` and `]`).
    pub async fn search(
        &self,
        query: &str,
        limit: u32,
    ) -> Result<Vec<(Message, String)>, CallError> {
        let mut o = no_options();
        o.insert("limit".into(), limit.to_variant());
        let l = self
            .call_list("SearchMessages", (query, o).to_variant())
            .await?;
        Ok(l.iter()
            .map(|d| {
                let snippet = d
                    .str("snippet")
                    .unwrap_or_else(|| d.str("text").unwrap_or_default());
                (Message::from_dict(d), snippet)
            })
            .collect())
    }

    /// Events with `seq > since`, oldest first (at most 1000).
    pub async fn events(&self, since: u64) -> Result<Vec<Event>, CallError> {
        let l = self
            .call_list("GetEvents", (since, 0u32).to_variant())
            .await?;
        Ok(l.iter().filter_map(Event::from_event_dict).collect())
    }
}

fn bad_reply(method: &str) -> CallError {
    CallError {
        kind: "Failed".into(),
        message: format!("{method}: unexpected reply type"),
    }
}

/// One `a{sv}`.
#[derive(Debug, Clone, Default)]
pub struct Dict(pub HashMap<String, glib::Variant>);

impl Dict {
    pub fn from_variant(v: &glib::Variant) -> Option<Dict> {
        v.get::<HashMap<String, glib::Variant>>().map(Dict)
    }

    pub fn str(&self, k: &str) -> Option<String> {
        self.0.get(k)?.get::<String>()
    }

    pub fn bool(&self, k: &str) -> Option<bool> {
        self.0.get(k)?.get::<bool>()
    }

    /// Any unsigned or signed integer as `u64`.
    pub fn u64(&self, k: &str) -> Option<u64> {
        let v = self.0.get(k)?;
        v.get::<u64>()
            .or_else(|| v.get::<u32>().map(u64::from))
            .or_else(|| v.get::<i64>().and_then(|x| u64::try_from(x).ok()))
            .or_else(|| v.get::<i32>().and_then(|x| u64::try_from(x).ok()))
    }

    pub fn dict(&self, k: &str) -> Option<Dict> {
        Dict::from_variant(self.0.get(k)?)
    }

    pub fn strs(&self, k: &str) -> Vec<String> {
        self.0
            .get(k)
            .and_then(|v| v.get::<Vec<String>>())
            .unwrap_or_default()
    }

    pub fn dicts(&self, k: &str) -> Vec<Dict> {
        self.0
            .get(k)
            .and_then(|v| v.get::<Vec<HashMap<String, glib::Variant>>>())
            .map(|l| l.into_iter().map(Dict).collect())
            .unwrap_or_default()
    }
}

/// A conversation as `ListConversations` / `GetConversation` / `ConversationChanged` give it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversation {
    pub id: String,
    pub name: Option<String>,
    pub kind: String,
    pub state: String,
    pub members: Vec<String>,
    /// The daemon's unread count, when it reports one.
    pub unread: Option<u64>,
    pub last_message: Option<Message>,
    pub last_activity_at: Option<String>,
    pub pending: usize,
    /// Why a `broken` conversation cannot be followed (the daemon's readable reason).
    pub state_reason: Option<String>,
}

impl Conversation {
    pub fn from_dict(d: &Dict) -> Conversation {
        let mut members = d.strs("members");
        if members.is_empty() {
            members = d
                .dicts("members")
                .iter()
                .filter_map(|m| m.str("address"))
                .collect();
        }
        Conversation {
            id: d.str("id").unwrap_or_default(),
            name: d.str("name").filter(|n| !n.is_empty()),
            kind: d.str("kind").unwrap_or_default(),
            state: d.str("state").unwrap_or_default(),
            members,
            unread: d.u64("unread").or_else(|| d.u64("unread_count")),
            last_message: d.dict("last_message").map(|m| Message::from_dict(&m)),
            last_activity_at: d.str("last_activity_at"),
            pending: d.dicts("pending").len(),
            state_reason: d.str("state_reason").filter(|r| !r.is_empty()),
        }
    }

    /// The header's subtitle: the state when it is not the usual one, else the member count.
    pub fn subtitle(&self) -> String {
        match (self.state.as_str(), self.members.len()) {
            ("pending", _) => "setting up…".to_owned(),
            ("broken", _) => match &self.state_reason {
                Some(r) => format!("broken: {r}"),
                None => "broken".to_owned(),
            },
            (_, 1) => "1 member".to_owned(),
            (_, n) => format!("{n} members"),
        }
    }

    /// What the list and the header show: the group's name, else the other members.
    pub fn title(&self, me: &str) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let others: Vec<&str> = self
            .members
            .iter()
            .map(String::as_str)
            .filter(|m| *m != me)
            .collect();
        if others.is_empty() {
            self.id.clone()
        } else {
            others.join(", ")
        }
    }
}

/// A message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    pub id: String,
    pub conversation: String,
    pub sender: String,
    pub kind: String,
    pub text: String,
    pub sent_at: String,
    pub received_at: Option<String>,
    pub state: String,
    /// `(kind, message)` when the send failed.
    pub error: Option<(String, String)>,
    pub position: u64,
}

impl Message {
    pub fn from_dict(d: &Dict) -> Message {
        Message {
            id: d.str("id").unwrap_or_default(),
            conversation: d.str("conversation").unwrap_or_default(),
            sender: d.str("sender").unwrap_or_default(),
            kind: d.str("kind").unwrap_or_else(|| "text".into()),
            text: d.str("text").unwrap_or_default(),
            sent_at: d.str("sent_at").unwrap_or_default(),
            received_at: d.str("received_at"),
            state: d.str("state").unwrap_or_default(),
            error: d.dict("error").map(|e| {
                (
                    e.str("kind").unwrap_or_default(),
                    e.str("message").unwrap_or_default(),
                )
            }),
            position: d.u64("position").unwrap_or(u64::MAX),
        }
    }
}

/// One event of the daemon's log, from a signal or from `GetEvents`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: u64,
    pub what: EventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// `message.received` (`true`: from someone else) / `message.created` (`false`: this
    /// account's own send, from any client).
    Message(Message, bool),
    /// `message.state`.
    State {
        conversation: String,
        id: String,
        state: String,
        error: Option<(String, String)>,
    },
    /// `conversation.*`: the conversation as it is now, and the event type.
    Conversation {
        kind: String,
        conversation: Option<Box<Conversation>>,
        id: String,
    },
    /// `relay.connected` / `relay.disconnected`.
    Relay { connected: bool },
    /// `account.created`.
    Account,
    /// Anything else (ignored, but its `seq` still counts).
    Other,
}

impl Event {
    /// A `GetEvents` entry: `seq`, `type` and the payload's fields.
    pub fn from_event_dict(d: &Dict) -> Option<Event> {
        let seq = d.u64("seq")?;
        let ty = d.str("type").unwrap_or_default();
        let what = match ty.as_str() {
            "message.received" | "message.created" => EventKind::Message(
                Message::from_dict(&d.dict("message")?),
                ty == "message.received",
            ),
            "message.state" => EventKind::State {
                conversation: d.str("conversation").unwrap_or_default(),
                id: d
                    .str("message_id")
                    .or_else(|| d.str("id"))
                    .unwrap_or_default(),
                state: d.str("state").unwrap_or_default(),
                error: d.dict("error").map(|e| {
                    (
                        e.str("kind").unwrap_or_default(),
                        e.str("message").unwrap_or_default(),
                    )
                }),
            },
            t if t.starts_with("conversation.") => {
                let c = d
                    .dict("conversation")
                    .map(|c| Box::new(Conversation::from_dict(&c)));
                EventKind::Conversation {
                    kind: t.to_owned(),
                    id: c.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
                    conversation: c,
                }
            }
            "relay.connected" => EventKind::Relay { connected: true },
            "relay.disconnected" => EventKind::Relay { connected: false },
            "account.created" => EventKind::Account,
            _ => EventKind::Other,
        };
        Some(Event { seq, what })
    }

    /// A signal of the interface (see docs/dbus.md), or `None` for one this app does not use.
    pub fn from_signal(name: &str, params: &glib::Variant) -> Option<Event> {
        let n = params.n_children();
        if n == 0 {
            return None;
        }
        let extras = Dict::from_variant(&params.child_value(n - 1))?;
        let seq = extras.u64("seq")?;
        let s = |i: usize| params.child_value(i).get::<String>().unwrap_or_default();
        let what = match name {
            "MessageReceived" if n == 6 => EventKind::Message(
                Message {
                    conversation: s(0),
                    id: s(1),
                    sender: s(2),
                    text: s(3),
                    sent_at: s(4),
                    kind: extras.str("kind").unwrap_or_else(|| "text".into()),
                    state: extras.str("state").unwrap_or_else(|| "received".into()),
                    received_at: extras.str("received_at"),
                    error: None,
                    position: extras.u64("position").unwrap_or(u64::MAX),
                },
                true,
            ),
            "MessageStateChanged" if n == 4 => EventKind::State {
                conversation: s(0),
                id: s(1),
                state: s(2),
                error: extras.dict("error").map(|e| {
                    (
                        e.str("kind").unwrap_or_default(),
                        e.str("message").unwrap_or_default(),
                    )
                }),
            },
            "ConversationChanged" if n == 2 => {
                let c = extras
                    .dict("conversation")
                    .map(|c| Box::new(Conversation::from_dict(&c)));
                EventKind::Conversation {
                    kind: extras.str("type").unwrap_or_default(),
                    id: s(0),
                    conversation: c,
                }
            }
            "ConnectionChanged" if n == 3 => EventKind::Relay {
                connected: params.child_value(1).get::<bool>().unwrap_or(false),
            },
            _ => return None,
        };
        Some(Event { seq, what })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(in, out)` signatures of each `<method>` and `<signal>` of the XML (one element per
    /// line, as the daemon's drift test writes it).
    fn xml_signatures() -> HashMap<String, (String, String)> {
        let attr = |line: &str, name: &str| -> Option<String> {
            let start = line.find(&format!("{name}=\""))? + name.len() + 2;
            let len = line[start..].find('"')?;
            Some(line[start..start + len].to_owned())
        };
        let mut out = HashMap::new();
        let mut current: Option<String> = None;
        for line in INTROSPECTION.lines().map(str::trim) {
            if line.starts_with("<method ") || line.starts_with("<signal ") {
                let kind = if line.starts_with("<method") {
                    ""
                } else {
                    "signal "
                };
                let name = format!("{kind}{}", attr(line, "name").unwrap_or_default());
                out.insert(name.clone(), (String::new(), String::new()));
                current = Some(name);
            } else if line.starts_with("</method") || line.starts_with("</signal") {
                current = None;
            } else if line.starts_with("<arg ")
                && let Some(c) = &current
                && let Some(entry) = out.get_mut(c)
            {
                let ty = attr(line, "type").unwrap_or_default();
                if attr(line, "direction").as_deref() == Some("out") {
                    entry.1.push_str(&ty);
                } else {
                    entry.0.push_str(&ty);
                }
            }
        }
        out
    }

    /// Every method and signal this app uses is in the checked-in interface with the
    /// signature the app sends or expects, and GIO parses the file.
    #[test]
    fn the_app_matches_the_introspection_xml() {
        let info = interface_info().expect("introspection XML");
        let xml = xml_signatures();
        let sig = |name: &str| -> Option<(String, String)> { xml.get(name).cloned() };
        let methods = [
            ("Status", "a{sv}", "a{sv}"),
            ("AccountInfo", "a{sv}", "a{sv}"),
            ("ListConversations", "a{sv}", "aa{sv}"),
            ("GetConversation", "sa{sv}", "a{sv}"),
            ("CreateConversation", "asa{sv}", "a{sv}"),
            ("AddMembers", "sasa{sv}", "a{sv}"),
            ("RemoveMembers", "sasa{sv}", "a{sv}"),
            ("LeaveConversation", "sa{sv}", "a{sv}"),
            ("RenameConversation", "ssa{sv}", "a{sv}"),
            ("SendMessage", "ssa{sv}", "a{sv}"),
            ("ListMessages", "sa{sv}", "aa{sv}"),
            ("ListContacts", "a{sv}", "aa{sv}"),
            ("GetEvents", "tu", "aa{sv}"),
            ("MarkRead", "sa{sv}", "a{sv}"),
            ("SearchMessages", "sa{sv}", "aa{sv}"),
            ("CreateAccount", "ssa{sv}", "a{sv}"),
            ("SafetyNumber", "sa{sv}", "a{sv}"),
            ("VerifyContact", "ssa{sv}", "a{sv}"),
        ];
        for (name, input, output) in methods {
            assert!(
                info.lookup_method(name).is_some(),
                "GIO: {name} is not in the XML"
            );
            let (i, o) = sig(name).unwrap_or_else(|| panic!("{name} is not in the XML"));
            assert_eq!((i.as_str(), o.as_str()), (input, output), "{name}");
        }
        for (name, args) in [
            ("MessageReceived", "sssssa{sv}"),
            ("MessageStateChanged", "sssa{sv}"),
            ("ConversationChanged", "sa{sv}"),
            ("ConnectionChanged", "sba{sv}"),
        ] {
            assert!(info.lookup_signal(name).is_some(), "GIO: signal {name}");
            let (i, _) = sig(&format!("signal {name}")).unwrap_or_else(|| panic!("signal {name}"));
            assert_eq!(i, args, "signal {name}");
        }
    }

    #[test]
    fn a_message_received_signal_becomes_an_event() {
        let mut extras = no_options();
        extras.insert("seq".into(), 7u64.to_variant());
        extras.insert("position".into(), 3u64.to_variant());
        extras.insert("state".into(), "received".to_variant());
        let params = ("c1", "m1", "bob@r", "hi", "2026-01-01T10:00:00Z", extras).to_variant();
        let e = Event::from_signal("MessageReceived", &params).expect("event");
        assert_eq!(e.seq, 7);
        let EventKind::Message(m, true) = e.what else {
            panic!("not a message: {e:?}")
        };
        assert_eq!(
            (m.conversation.as_str(), m.id.as_str(), m.text.as_str()),
            ("c1", "m1", "hi")
        );
        assert_eq!(m.position, 3);
        // No seq, no event: a client could not place it.
        let params = ("c1", "m1", "bob@r", "hi", "t", no_options()).to_variant();
        assert!(Event::from_signal("MessageReceived", &params).is_none());
    }

    #[test]
    fn a_get_events_entry_becomes_an_event() {
        let mut msg = no_options();
        msg.insert("id".into(), "m2".to_variant());
        msg.insert("conversation".into(), "c1".to_variant());
        msg.insert("text".into(), "yo".to_variant());
        let mut ev = no_options();
        ev.insert("seq".into(), 9u64.to_variant());
        ev.insert("type".into(), "message.created".to_variant());
        ev.insert("message".into(), msg.to_variant());
        let e = Event::from_event_dict(&Dict(ev)).expect("event");
        assert_eq!(e.seq, 9);
        assert!(
            matches!(e.what, EventKind::Message(ref m, false) if m.id == "m2" && m.text == "yo")
        );
        let mut ev = no_options();
        ev.insert("seq".into(), 10u64.to_variant());
        ev.insert("type".into(), "contact.identity_changed".to_variant());
        assert_eq!(
            Event::from_event_dict(&Dict(ev)).map(|e| e.what),
            Some(EventKind::Other)
        );
    }

    #[test]
    fn a_broken_conversation_says_why_in_its_subtitle() {
        let conv = |state: &str, reason: Option<&str>, members: &[&str]| {
            let mut d = no_options();
            d.insert("id".into(), "c1".to_variant());
            d.insert("state".into(), state.to_variant());
            let members: Vec<String> = members.iter().map(|m| m.to_string()).collect();
            d.insert("members".into(), members.to_variant());
            if let Some(r) = reason {
                d.insert("state_reason".into(), r.to_variant());
            }
            Conversation::from_dict(&Dict(d))
        };
        let broken = conv("broken", Some("no GroupInfo at the relay"), &["a", "b"]);
        assert_eq!(
            broken.state_reason.as_deref(),
            Some("no GroupInfo at the relay")
        );
        assert_eq!(broken.subtitle(), "broken: no GroupInfo at the relay");
        assert_eq!(conv("broken", None, &["a"]).subtitle(), "broken");
        assert_eq!(conv("pending", None, &["a"]).subtitle(), "setting up…");
        assert_eq!(conv("active", None, &["a"]).subtitle(), "1 member");
        assert_eq!(
            conv("active", None, &["a", "b", "c"]).subtitle(),
            "3 members"
        );
    }
}
