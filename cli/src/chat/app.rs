//! The chat's state and how keys and daemon events change it. Nothing here draws or does
//! I/O: the app asks for daemon calls by pushing [`Request`]s to `outbox`, which the main
//! loop hands to the network thread, and `ui` draws a snapshot of it.

use jiff::tz::TimeZone;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};
use serde::Deserialize;
use serde_json::{Value, json};
use sotto_protocol::api::{Message, MessageState, RelayStatus, Status};
use sotto_protocol::methods::{self, Method as _};

use super::model::{self, ConvView};
use super::ui;

/// How many messages one history page asks for (a screen is far fewer).
pub const PAGE: u32 = 100;
/// A search asks for this many hits.
pub const SEARCH_LIMIT: u32 = 50;
/// Paging older to reach a search hit stops after this many loaded messages.
const JUMP_MAX_MESSAGES: usize = 200_000;

/// A daemon call the app wants made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `conversation.list`.
    Conversations,
    /// `conversation.get` of what the user named on the command line.
    Resolve(String),
    /// `message.list` of one page, the newest or the one before `before`.
    History {
        /// The conversation id.
        conversation: String,
        /// Older than this message id.
        before: Option<String>,
    },
    /// `message.send`.
    Send {
        /// The conversation id.
        conversation: String,
        /// The text.
        text: String,
    },
    /// `conversation.mark_read` up to a message.
    MarkRead {
        /// The conversation id.
        conversation: String,
        /// The newest message on screen.
        up_to: String,
    },
    /// `message.search`.
    Search {
        /// The words.
        query: String,
    },
}

impl Request {
    /// The JSON-RPC method and params of this request.
    pub fn to_call(&self) -> (&'static str, Value) {
        match self {
            Request::Conversations => (methods::ConversationList::NAME, json!({})),
            Request::Resolve(c) => (methods::ConversationGet::NAME, json!({ "conversation": c })),
            Request::History {
                conversation,
                before,
            } => (
                methods::MessageList::NAME,
                json!({ "conversation": conversation, "before": before, "limit": PAGE }),
            ),
            Request::Send { conversation, text } => (
                methods::MessageSend::NAME,
                json!({ "conversation": conversation, "text": text }),
            ),
            Request::MarkRead {
                conversation,
                up_to,
            } => (
                "conversation.mark_read",
                json!({ "conversation": conversation, "up_to": up_to }),
            ),
            Request::Search { query } => (
                "message.search",
                json!({ "query": query, "limit": SEARCH_LIMIT }),
            ),
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What to show.
    pub message: String,
    /// The JSON-RPC error code, when the daemon answered.
    pub code: Option<i64>,
    /// The daemon could not be reached at all.
    pub unreachable: bool,
}

/// JSON-RPC "method not found".
const METHOD_NOT_FOUND: i64 = -32601;

/// What the network side tells the app.
#[derive(Debug, Clone)]
pub enum NetEvent {
    /// (Re)connected and subscribed; the daemon's status at that moment.
    Connected(Box<Status>),
    /// The daemon went away; the network side is reconnecting.
    Disconnected(String),
    /// One event of the subscription, raw.
    Event(Value),
    /// The daemon no longer holds the events since our last seq: reload everything.
    Expired,
    /// The answer to a request.
    Reply(Request, Result<Value, Failure>),
}

/// Where the keys go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// The conversation list.
    List,
    /// The input line.
    Input,
}

/// A search hit: a message and the daemon's snippet.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Hit {
    /// The message.
    #[serde(flatten)]
    pub message: Message,
    /// The matching words in context.
    #[serde(default)]
    pub snippet: Option<String>,
}

/// The search box.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Search {
    /// What is typed.
    pub query: String,
    /// The hits of the last search.
    pub results: Vec<Hit>,
    /// The selected hit.
    pub selected: usize,
    /// The query changed since the last search (Enter searches again).
    pub dirty: bool,
    /// A search is on its way.
    pub pending: bool,
    /// Why the last search failed.
    pub error: Option<String>,
}

/// What covers the screen, if anything.
#[derive(Debug, Clone, PartialEq)]
pub enum Overlay {
    /// Nothing.
    None,
    /// The key list.
    Help,
    /// The search box.
    Search(Search),
}

/// The open conversation's loaded history.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// The conversation id.
    pub conversation: String,
    /// Loaded messages, log order (queued last).
    pub messages: Vec<Message>,
    /// The first page arrived.
    pub loaded: bool,
    /// An older page is on its way.
    pub loading_older: bool,
    /// The oldest message is loaded.
    pub at_start: bool,
    /// Lines scrolled up from the newest line (0: the newest message is on screen).
    pub scroll: usize,
    /// A message to mark (a search hit).
    pub highlight: Option<String>,
    /// A message to bring on screen once it is loaded.
    pub jump_to: Option<String>,
    /// A reload of the newest page is on its way (one at a time, however many messages
    /// turn sent meanwhile).
    pub refreshing: bool,
}

impl History {
    fn new(conversation: String) -> History {
        History {
            conversation,
            messages: Vec::new(),
            loaded: false,
            loading_older: false,
            at_start: false,
            scroll: 0,
            highlight: None,
            jump_to: None,
            refreshing: false,
        }
    }
}

/// The text being composed, with a cursor (a byte offset on a char boundary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Input {
    /// The text.
    pub text: String,
    /// The cursor.
    pub cursor: usize,
}

impl Input {
    fn insert(&mut self, s: &str) {
        self.text.insert_str(self.cursor, s);
        self.cursor += s.len();
    }

    fn backspace(&mut self) {
        if let Some(c) = self.text[..self.cursor].chars().next_back() {
            self.cursor -= c.len_utf8();
            self.text.remove(self.cursor);
        }
    }

    fn delete(&mut self) {
        if self.cursor < self.text.len() {
            self.text.remove(self.cursor);
        }
    }

    fn left(&mut self) {
        if let Some(c) = self.text[..self.cursor].chars().next_back() {
            self.cursor -= c.len_utf8();
        }
    }

    fn right(&mut self) {
        if let Some(c) = self.text[self.cursor..].chars().next() {
            self.cursor += c.len_utf8();
        }
    }

    /// Replaces the whole text, cursor at the end.
    pub fn set(&mut self, text: String) {
        self.cursor = text.len();
        self.text = text;
    }

    fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }
}

/// The whole state of the chat.
#[derive(Debug)]
pub struct App {
    /// Local times are shown in this zone.
    pub tz: TimeZone,
    /// This account's address.
    pub me: Option<String>,
    /// The daemon answers.
    pub daemon_up: bool,
    /// Why it does not, when it does not.
    pub daemon_error: Option<String>,
    /// The daemon's relays and whether it is connected to them.
    pub relays: Vec<RelayStatus>,
    /// The conversations, newest activity first.
    pub conversations: Vec<ConvView>,
    /// The first list arrived.
    pub list_loaded: bool,
    /// The highlighted row of the list.
    pub selected: usize,
    /// The open conversation.
    pub open: Option<History>,
    /// Where keys go.
    pub focus: Focus,
    /// The text being composed.
    pub input: Input,
    /// What covers the screen.
    pub overlay: Overlay,
    /// A one-line notice for the status line (errors, hints).
    pub notice: Option<String>,
    /// The user asked to quit.
    pub quit: bool,
    /// The user asked for `$EDITOR` (the main loop runs it).
    pub want_editor: bool,
    /// Calls to make.
    pub outbox: Vec<Request>,
    /// The terminal's size (columns, rows); layout follows from it.
    pub size: (u16, u16),
    /// The conversation named on the command line, opened once it resolves.
    pending_open: Option<String>,
    /// A mark-read call is on its way for this conversation.
    mark_read_inflight: Option<String>,
    /// The daemon knows `conversation.mark_read`.
    mark_read_supported: bool,
    /// The last mark-read failed: wait for a reconnect before trying again.
    mark_read_paused: bool,
    /// Counts the news this client saw (see `ConvView::bumped`).
    bumps: u64,
}

impl App {
    /// A fresh app; `open` is the conversation named on the command line.
    pub fn new(tz: TimeZone, open: Option<String>) -> App {
        App {
            tz,
            me: None,
            daemon_up: false,
            daemon_error: None,
            relays: Vec::new(),
            conversations: Vec::new(),
            list_loaded: false,
            selected: 0,
            open: None,
            focus: if open.is_some() {
                Focus::Input
            } else {
                Focus::List
            },
            input: Input::default(),
            overlay: Overlay::None,
            notice: None,
            quit: false,
            want_editor: false,
            outbox: Vec::new(),
            size: (80, 24),
            pending_open: open,
            mark_read_inflight: None,
            mark_read_supported: true,
            mark_read_paused: false,
            bumps: 0,
        }
    }

    /// The open conversation's list entry.
    pub fn open_conv(&self) -> Option<&ConvView> {
        let id = &self.open.as_ref()?.conversation;
        self.conversations.iter().find(|c| &c.conv.id == id)
    }

    fn conv_mut(&mut self, id: &str) -> Option<&mut ConvView> {
        self.conversations.iter_mut().find(|c| c.conv.id == id)
    }

    fn selected_id(&self) -> Option<String> {
        self.conversations
            .get(self.selected)
            .map(|c| c.conv.id.clone())
    }

    /// Re-sorts the list keeping the same conversation highlighted.
    fn resort(&mut self) {
        let keep = self.selected_id();
        model::sort_by_activity(&mut self.conversations);
        if let Some(id) = keep
            && let Some(i) = self.conversations.iter().position(|c| c.conv.id == id)
        {
            self.selected = i;
        }
        self.selected = self
            .selected
            .min(self.conversations.len().saturating_sub(1));
    }

    fn upsert(&mut self, conv: ConvView) {
        match self.conv_mut(&conv.conv.id) {
            Some(old) => *old = conv,
            None => self.conversations.push(conv),
        }
        self.resort();
    }

    // ----- keys and the mouse -----

    /// Handles a key press.
    pub fn on_key(&mut self, key: KeyEvent) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        if ctrl && key.code == KeyCode::Char('c') {
            self.quit = true;
            return;
        }
        match &mut self.overlay {
            Overlay::Help => {
                self.overlay = Overlay::None;
                return;
            }
            Overlay::Search(_) => {
                self.search_key(key);
                return;
            }
            Overlay::None => {}
        }
        let page = (ui::history_height(self)).saturating_sub(2).max(1);
        match key.code {
            KeyCode::F(1) => return self.overlay = Overlay::Help,
            KeyCode::Char('f') if ctrl => return self.open_search(),
            KeyCode::Char('p') if ctrl => return self.move_selection(-1),
            KeyCode::Char('n') if ctrl => return self.move_selection(1),
            KeyCode::PageUp => return self.scroll_by(page as isize),
            KeyCode::PageDown => return self.scroll_by(-(page as isize)),
            KeyCode::Tab | KeyCode::BackTab => {
                self.focus = match self.focus {
                    Focus::List if self.open.is_some() => Focus::Input,
                    Focus::List => {
                        self.notice = Some("open a conversation first (Enter)".into());
                        Focus::List
                    }
                    Focus::Input => Focus::List,
                };
                return;
            }
            _ => {}
        }
        match self.focus {
            Focus::List => match key.code {
                KeyCode::Up => self.move_selection(-1),
                KeyCode::Down => self.move_selection(1),
                KeyCode::Home => self.selected = 0,
                KeyCode::End => self.selected = self.conversations.len().saturating_sub(1),
                KeyCode::Enter => {
                    if let Some(id) = self.selected_id() {
                        self.open_conversation(&id, None);
                        self.focus = Focus::Input;
                    }
                }
                KeyCode::Char('?') => self.overlay = Overlay::Help,
                KeyCode::Char('/') => self.open_search(),
                KeyCode::Esc => {
                    if let Some(h) = self.open.as_mut() {
                        h.highlight = None;
                    }
                    self.notice = None;
                }
                _ => {}
            },
            Focus::Input => match key.code {
                KeyCode::Enter if alt || key.modifiers.contains(KeyModifiers::SHIFT) => {
                    self.input.insert("\n")
                }
                KeyCode::Char('j') if ctrl => self.input.insert("\n"),
                KeyCode::Enter => self.send(),
                KeyCode::Char('e') if ctrl => self.want_editor = true,
                KeyCode::Char('u') if ctrl => {
                    self.input.text.drain(..self.input.cursor);
                    self.input.cursor = 0;
                }
                KeyCode::Char('a') if ctrl => self.input.cursor = 0,
                KeyCode::Esc => self.focus = Focus::List,
                KeyCode::Backspace => self.input.backspace(),
                KeyCode::Delete => self.input.delete(),
                KeyCode::Left => self.input.left(),
                KeyCode::Right => self.input.right(),
                KeyCode::Home => self.input.cursor = 0,
                KeyCode::End => self.input.cursor = self.input.text.len(),
                KeyCode::Up => self.scroll_by(1),
                KeyCode::Down => self.scroll_by(-1),
                KeyCode::Char(c) if !ctrl => {
                    let mut buf = [0u8; 4];
                    self.input.insert(c.encode_utf8(&mut buf));
                }
                _ => {}
            },
        }
    }

    /// Text pasted into the terminal goes into the input line as it is.
    pub fn on_paste(&mut self, text: &str) {
        match &mut self.overlay {
            Overlay::Search(s) => {
                s.query.push_str(&text.replace(['\r', '\n'], " "));
                s.dirty = true;
            }
            _ if self.focus == Focus::Input => self.input.insert(&text.replace("\r\n", "\n")),
            _ => {}
        }
    }

    /// Handles the mouse: the wheel scrolls the list or the history, whichever it is over.
    pub fn on_mouse(&mut self, m: MouseEvent) {
        let over_list = m.column < ui::list_width(self.size);
        match m.kind {
            MouseEventKind::ScrollUp if over_list => self.move_selection(-1),
            MouseEventKind::ScrollDown if over_list => self.move_selection(1),
            MouseEventKind::ScrollUp => self.scroll_by(3),
            MouseEventKind::ScrollDown => self.scroll_by(-3),
            _ => {}
        }
    }

    /// The terminal changed size.
    pub fn on_resize(&mut self, cols: u16, rows: u16) {
        self.size = (cols, rows);
        self.clamp_scroll();
        self.after_change();
    }

    fn move_selection(&mut self, by: isize) {
        if self.conversations.is_empty() {
            return;
        }
        let last = self.conversations.len() - 1;
        self.selected = self.selected.saturating_add_signed(by).min(last);
    }

    fn scroll_by(&mut self, lines: isize) {
        if let Some(h) = self.open.as_mut() {
            h.scroll = h.scroll.saturating_add_signed(lines);
        }
        self.clamp_scroll();
        self.after_change();
    }

    fn clamp_scroll(&mut self) {
        let height = ui::history_height(self);
        let width = ui::history_width(self);
        let Some(h) = &self.open else { return };
        let tail = ui::history_tail(self, h, width, h.scroll + height);
        if tail.complete {
            let max = tail.lines.len().saturating_sub(height);
            if let Some(h) = self.open.as_mut() {
                h.scroll = h.scroll.min(max);
            }
        }
    }

    fn open_search(&mut self) {
        self.overlay = Overlay::Search(Search::default());
    }

    fn search_key(&mut self, key: KeyEvent) {
        let Overlay::Search(s) = &mut self.overlay else {
            return;
        };
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Esc => self.overlay = Overlay::None,
            KeyCode::Up => s.selected = s.selected.saturating_sub(1),
            KeyCode::Char('p') if ctrl => s.selected = s.selected.saturating_sub(1),
            KeyCode::Down => s.selected = (s.selected + 1).min(s.results.len().saturating_sub(1)),
            KeyCode::Char('n') if ctrl => {
                s.selected = (s.selected + 1).min(s.results.len().saturating_sub(1))
            }
            KeyCode::Backspace => {
                s.query.pop();
                s.dirty = true;
            }
            KeyCode::Enter => {
                if !s.dirty && !s.results.is_empty() {
                    if let Some(hit) = s.results.get(s.selected).cloned() {
                        self.overlay = Overlay::None;
                        self.jump_to(&hit.message);
                    }
                } else if s.query.trim().is_empty() {
                    s.error = Some("type the words to search for".into());
                } else if !s.pending {
                    s.pending = true;
                    s.dirty = false;
                    s.error = None;
                    self.outbox.push(Request::Search {
                        query: s.query.clone(),
                    });
                }
            }
            KeyCode::Char(c) if !ctrl => {
                s.query.push(c);
                s.dirty = true;
            }
            _ => {}
        }
    }

    fn send(&mut self) {
        let Some(h) = &self.open else {
            return;
        };
        if self.input.text.trim().is_empty() {
            return;
        }
        let text = self.input.take();
        self.outbox.push(Request::Send {
            conversation: h.conversation.clone(),
            text,
        });
        if let Some(h) = self.open.as_mut() {
            h.scroll = 0;
        }
    }

    // ----- opening and paging -----

    /// Opens a conversation: its newest page loads, then older ones as the user scrolls up.
    pub fn open_conversation(&mut self, id: &str, jump_to: Option<String>) {
        if let Some(i) = self.conversations.iter().position(|c| c.conv.id == id) {
            self.selected = i;
        }
        if let Some(h) = self.open.as_mut()
            && h.conversation == id
        {
            if jump_to.is_some() {
                h.jump_to = jump_to;
                self.try_jump();
            }
            return;
        }
        let mut h = History::new(id.to_owned());
        h.jump_to = jump_to;
        self.open = Some(h);
        self.mark_read_inflight = None;
        self.outbox.push(Request::History {
            conversation: id.to_owned(),
            before: None,
        });
    }

    fn jump_to(&mut self, m: &Message) {
        self.focus = Focus::List;
        self.open_conversation(&m.conversation, Some(m.id.clone()));
    }

    /// Brings the jump target on screen if it is loaded; else asks for an older page.
    fn try_jump(&mut self) {
        let height = ui::history_height(self);
        let width = ui::history_width(self);
        let Some(h) = &self.open else { return };
        let Some(target) = h.jump_to.clone() else {
            return;
        };
        if !h.loaded {
            return;
        }
        let shown_idx = h
            .messages
            .iter()
            .filter(|m| m.kind == "text")
            .position(|m| m.id == target);
        if let Some(idx) = shown_idx {
            let after = ui::history_lines_after(self, h, width, idx);
            let h = self.open.as_mut().expect("checked above");
            h.highlight = Some(target);
            h.jump_to = None;
            h.scroll = after.saturating_sub(height / 2);
            self.notice = None;
            self.clamp_scroll();
            self.after_change();
        } else if h.at_start || h.messages.len() >= JUMP_MAX_MESSAGES {
            let h = self.open.as_mut().expect("checked above");
            h.jump_to = None;
            self.notice = Some("that message is not in this history any more".into());
        } else if !h.loading_older {
            let before = h.messages.first().map(|m| m.id.clone());
            let conversation = h.conversation.clone();
            self.open.as_mut().expect("checked above").loading_older = true;
            self.notice = Some("looking for the message in older history…".into());
            self.outbox.push(Request::History {
                conversation,
                before,
            });
        }
    }

    /// After anything that may change what is on screen: load an older page when the top is
    /// near, mark the conversation read when its newest message is on screen.
    fn after_change(&mut self) {
        let height = ui::history_height(self);
        let width = ui::history_width(self);
        let Some(h) = &self.open else { return };
        if !h.loaded {
            return;
        }
        // Less than a screen above what is shown: fetch the page before.
        let tail = ui::history_tail(self, h, width, h.scroll + 2 * height);
        let near_top = tail.complete && tail.lines.len() < h.scroll + 2 * height;
        if near_top && !h.at_start && !h.loading_older && !h.messages.is_empty() {
            let before = h.messages.first().map(|m| m.id.clone());
            let conversation = h.conversation.clone();
            self.open.as_mut().expect("checked above").loading_older = true;
            self.outbox.push(Request::History {
                conversation,
                before,
            });
        }
        let Some(h) = &self.open else { return };
        let unread = self
            .open_conv()
            .and_then(|c| c.unread)
            .is_some_and(|n| n > 0);
        if h.scroll == 0
            && unread
            && self.mark_read_supported
            && !self.mark_read_paused
            && self.daemon_up
            && self.mark_read_inflight.is_none()
            && let Some(newest) = h.messages.last()
        {
            let conversation = h.conversation.clone();
            self.mark_read_inflight = Some(conversation.clone());
            self.outbox.push(Request::MarkRead {
                conversation,
                up_to: newest.id.clone(),
            });
        }
    }

    // ----- the daemon -----

    /// Handles what the network side reports.
    pub fn on_net(&mut self, ev: NetEvent) {
        match ev {
            NetEvent::Connected(status) => {
                self.daemon_up = true;
                self.daemon_error = None;
                self.mark_read_paused = false;
                self.me = status.account.as_ref().map(|a| a.address.to_string());
                self.relays = status.relays;
                self.outbox.push(Request::Conversations);
                if let Some(q) = self.pending_open.take() {
                    self.outbox.push(Request::Resolve(q));
                }
                if self.me.is_none() {
                    self.notice =
                        Some("this daemon has no account yet: run `sotto account create`".into());
                }
            }
            NetEvent::Disconnected(why) => {
                self.daemon_up = false;
                self.daemon_error = Some(why);
                for r in &mut self.relays {
                    r.connected = false;
                }
            }
            NetEvent::Expired => {
                self.outbox.push(Request::Conversations);
                if let Some(h) = self.open.as_mut() {
                    let conversation = h.conversation.clone();
                    let mut fresh = History::new(conversation.clone());
                    fresh.highlight = h.highlight.take();
                    *h = fresh;
                    self.outbox.push(Request::History {
                        conversation,
                        before: None,
                    });
                }
            }
            NetEvent::Event(v) => self.on_event(&v),
            NetEvent::Reply(req, result) => self.on_reply(req, result),
        }
        self.after_change();
    }

    fn on_event(&mut self, v: &Value) {
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "message.created" | "message.received" => {
                let Some(m) = v
                    .get("message")
                    .and_then(|m| serde_json::from_value::<Message>(m.clone()).ok())
                else {
                    return;
                };
                self.on_message(m, kind == "message.received");
            }
            "message.state" => {
                let conv = v.get("conversation").and_then(Value::as_str).unwrap_or("");
                let id = v.get("message_id").and_then(Value::as_str).unwrap_or("");
                let Some(state) = v
                    .get("state")
                    .and_then(|s| serde_json::from_value::<MessageState>(s.clone()).ok())
                else {
                    return;
                };
                let error = v
                    .get("error")
                    .and_then(|e| serde_json::from_value(e.clone()).ok());
                let apply = |m: &mut Message| {
                    if m.id == id {
                        m.state = state;
                        m.error.clone_from(&error);
                    }
                };
                if let Some(h) = self.open.as_mut().filter(|h| h.conversation == conv) {
                    h.messages.iter_mut().for_each(apply);
                    if state == MessageState::Sent && !h.refreshing {
                        // Its place in the log is known now: the newest page has it.
                        h.refreshing = true;
                        self.outbox.push(Request::History {
                            conversation: conv.to_owned(),
                            before: None,
                        });
                    }
                }
                if let Some(c) = self.conv_mut(conv)
                    && let Some(m) = c.last_message.as_mut()
                {
                    apply(m);
                }
            }
            "relay.connected" | "relay.disconnected" => {
                let url = v.get("url").and_then(Value::as_str).unwrap_or("");
                let connected = kind == "relay.connected";
                match self.relays.iter_mut().find(|r| r.url == url) {
                    Some(r) => r.connected = connected,
                    None => self.relays.push(RelayStatus {
                        url: url.to_owned(),
                        connected,
                    }),
                }
            }
            "account.created" => {
                self.me = v
                    .pointer("/account/address")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                self.notice = None;
            }
            k if k.starts_with("conversation.") => match v.get("conversation") {
                Some(c) if c.is_object() => {
                    if let Ok(conv) = serde_json::from_value::<ConvView>(c.clone()) {
                        self.merge_conv(conv);
                    }
                }
                // Only an id: ask for the list again.
                _ => self.outbox.push(Request::Conversations),
            },
            _ => {}
        }
    }

    /// A conversation object from an event or a reply: the daemon's read-state fields win
    /// when present; when absent (an older daemon) the ones we have are kept.
    fn merge_conv(&mut self, mut conv: ConvView) {
        if let Some(old) = self.conv_mut(&conv.conv.id) {
            conv.bumped = old.bumped;
            if conv.unread.is_none() {
                conv.unread = old.unread;
            }
            if conv.last_message.is_none() {
                conv.last_message.clone_from(&old.last_message);
            }
            if conv.last_activity_at.is_none() {
                conv.last_activity_at.clone_from(&old.last_activity_at);
            }
        }
        self.upsert(conv);
    }

    fn on_message(&mut self, m: Message, received: bool) {
        let width = ui::history_width(self);
        self.bumps += 1;
        let bump = self.bumps;
        match self.conv_mut(&m.conversation) {
            Some(c) => c.note_message(&m, received, bump),
            None => self.outbox.push(Request::Conversations),
        }
        self.resort();
        if let Some(h) = self
            .open
            .as_mut()
            .filter(|h| h.conversation == m.conversation)
        {
            let id = m.id.clone();
            let added = model::merge_messages(&mut h.messages, vec![m]) > 0;
            if added && h.scroll > 0 {
                // Keep the lines the user is reading where they are: the new message's
                // lines push the view up by as many.
                let h = self.open.as_ref().expect("checked above");
                let shown: Vec<&Message> = h.messages.iter().filter(|m| m.kind == "text").collect();
                if let Some(idx) = shown.iter().position(|m| m.id == id) {
                    // (A message older than all loaded ones does not move the view.)
                    let grew = if idx == 0 {
                        0
                    } else {
                        ui::history_lines_after(self, h, width, idx - 1)
                            - ui::history_lines_after(self, h, width, idx)
                    };
                    if let Some(h) = self.open.as_mut() {
                        h.scroll += grew;
                    }
                }
            }
        }
    }

    fn on_reply(&mut self, req: Request, result: Result<Value, Failure>) {
        match (req, result) {
            (Request::Conversations, Ok(v)) => {
                let list: Vec<Value> = serde_json::from_value(v).unwrap_or_default();
                let keep = self.selected_id();
                let mut fresh: Vec<ConvView> = list
                    .into_iter()
                    .filter_map(|c| serde_json::from_value(c).ok())
                    .collect();
                // Read-state fields absent (older daemon): keep what the events told us.
                for c in &mut fresh {
                    if let Some(old) = self.conversations.iter().find(|o| o.conv.id == c.conv.id) {
                        c.bumped = old.bumped;
                        if c.last_message.is_none() {
                            c.last_message.clone_from(&old.last_message);
                            c.last_activity_at.clone_from(&old.last_activity_at);
                        }
                        if c.unread.is_none() {
                            c.unread = old.unread;
                        }
                    }
                }
                self.conversations = fresh;
                self.list_loaded = true;
                if let Some(id) = keep {
                    self.selected = self
                        .conversations
                        .iter()
                        .position(|c| c.conv.id == id)
                        .unwrap_or(0);
                }
                self.resort();
            }
            (Request::Resolve(_), Ok(v)) => {
                if let Ok(conv) = serde_json::from_value::<ConvView>(v) {
                    let id = conv.conv.id.clone();
                    self.merge_conv(conv);
                    self.open_conversation(&id, None);
                    self.focus = Focus::Input;
                }
            }
            (Request::Resolve(q), Err(e)) => {
                self.focus = Focus::List;
                self.notice = Some(format!("cannot open {q}: {}", e.message));
            }
            (
                Request::History {
                    conversation,
                    before,
                },
                result,
            ) => {
                let Some(h) = self
                    .open
                    .as_mut()
                    .filter(|h| h.conversation == conversation)
                else {
                    return;
                };
                if before.is_some() {
                    h.loading_older = false;
                } else {
                    h.refreshing = false;
                }
                match result {
                    Ok(v) => {
                        let page: Vec<Message> = serde_json::from_value(v).unwrap_or_default();
                        if page.len() < PAGE as usize && (before.is_some() || !h.loaded) {
                            h.at_start = true;
                        }
                        h.loaded = true;
                        model::merge_messages(&mut h.messages, page);
                        self.try_jump();
                    }
                    Err(e) => self.notice = Some(format!("cannot load the history: {}", e.message)),
                }
            }
            (Request::Send { conversation, text }, result) => match result {
                Ok(v) => {
                    if let Ok(m) = serde_json::from_value::<Message>(v) {
                        self.on_message(m, false);
                    }
                }
                Err(e) => {
                    self.notice = Some(format!("not sent: {}", e.message));
                    let same = self
                        .open
                        .as_ref()
                        .is_some_and(|h| h.conversation == conversation);
                    if same && self.input.text.is_empty() {
                        self.input.set(text);
                    }
                }
            },
            (Request::MarkRead { .. }, result) => {
                self.mark_read_inflight = None;
                match result {
                    Ok(v) => {
                        if let Ok(conv) = serde_json::from_value::<ConvView>(v) {
                            self.merge_conv(conv);
                        }
                    }
                    Err(e) if e.code == Some(METHOD_NOT_FOUND) => self.mark_read_supported = false,
                    Err(e) => {
                        // Not again until the daemon is back (no loop on a failing call).
                        self.notice = Some(format!("cannot mark read: {}", e.message));
                        self.mark_read_paused = true;
                    }
                }
            }
            (Request::Search { query }, result) => {
                let Overlay::Search(s) = &mut self.overlay else {
                    return;
                };
                s.pending = false;
                if s.query != query {
                    s.dirty = true;
                }
                match result {
                    Ok(v) => {
                        s.results = serde_json::from_value(v).unwrap_or_default();
                        s.selected = 0;
                        if s.results.is_empty() {
                            s.error = Some("no messages match".into());
                        }
                    }
                    Err(e) if e.code == Some(METHOD_NOT_FOUND) => {
                        s.error = Some("this sottod has no message.search; update it".into())
                    }
                    Err(e) => s.error = Some(e.message),
                }
            }
            (Request::Conversations, Err(e)) => {
                self.notice = Some(format!("cannot list conversations: {}", e.message));
            }
        }
    }
}
