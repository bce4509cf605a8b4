//! The window: an `AdwLeaflet` with the conversation list and the open conversation, the
//! dialogs, and the event follower that keeps both current (signals, `GetEvents` after any
//! gap, the daemon's comings and goings).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Instant;

use adw::prelude::*;
use gtk::{gdk, gio, glib};

use crate::bus::{self, CallError, Client, Conversation, Event, EventKind, Message};

/// Messages fetched per page (the first screen and each "load older").
const PAGE: u32 = 50;

const CSS: &str = r#"
.bubble { border-radius: 12px; padding: 6px 10px; background-color: @card_bg_color; }
.bubble.mine { background-color: @accent_bg_color; color: @accent_fg_color; }
.bubble.failed { border: 2px solid @error_color; }
.bubble .sender { font-weight: bold; font-size: smaller; }
.bubble .meta { font-size: smaller; opacity: 0.75; }
.unread-badge { background-color: @accent_bg_color; color: @accent_fg_color; border-radius: 999px;
  padding: 0 7px; font-weight: bold; font-size: smaller; min-width: 10px; }
.day-separator { font-size: smaller; opacity: 0.7; margin: 8px 0; }
.daemon-gone { background-color: @warning_bg_color; color: @warning_fg_color; padding: 6px 12px; }
.messages { background: none; }
.preview { opacity: 0.7; font-size: smaller; }
"#;

pub fn load_css() {
    let provider = gtk::CssProvider::new();
    #[allow(deprecated)]
    provider.load_from_data(CSS);
    if let Some(display) = gdk::Display::default() {
        #[allow(deprecated)]
        gtk::style_context_add_provider_for_display(
            &display,
            &provider,
            gtk::STYLE_PROVIDER_PRIORITY_APPLICATION,
        );
    }
}

/// With `SOTTO_GTK_DEBUG=1`, what the app does with the bus, on stderr.
fn trace(what: &str) {
    if std::env::var_os("SOTTO_GTK_DEBUG").is_some() {
        eprintln!("sotto-gtk: {what}");
    }
}

fn set_name(w: &impl IsA<gtk::Accessible>, name: &str) {
    w.update_property(&[gtk::accessible::Property::Label(name)]);
}

/// Local wall-clock `HH:MM` of an RFC 3339 time, and its day (`YYYY-MM-DD`).
fn local_time(ts: &str) -> Option<glib::DateTime> {
    glib::DateTime::from_iso8601(ts, None).ok()?.to_local().ok()
}

fn hhmm(ts: &str) -> String {
    local_time(ts)
        .and_then(|t| t.format("%H:%M").ok())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

fn day_key(ts: &str) -> String {
    local_time(ts)
        .and_then(|t| t.format("%Y-%m-%d").ok())
        .map(|s| s.to_string())
        .unwrap_or_default()
}

fn day_label(ts: &str) -> String {
    let Some(t) = local_time(ts) else {
        return String::new();
    };
    let today = glib::DateTime::now_local()
        .ok()
        .and_then(|n| n.format("%Y-%m-%d").ok());
    let key = t.format("%Y-%m-%d").ok();
    if key.is_some() && key == today {
        return "Today".into();
    }
    t.format("%A, %e %B %Y")
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// Microseconds since the epoch, for sorting by activity.
fn epoch_us(ts: &str) -> i64 {
    glib::DateTime::from_iso8601(ts, None)
        .map(|t| t.to_unix() * 1_000_000 + i64::from(t.microsecond()))
        .unwrap_or(0)
}

fn message_time(m: &Message) -> &str {
    m.received_at.as_deref().unwrap_or(&m.sent_at)
}

/// One line of a message for previews and accessible names.
fn one_line(text: &str, max: usize) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > max {
        let mut s: String = line.chars().take(max).collect();
        s.push('…');
        s
    } else {
        line
    }
}

struct Entry {
    conv: Conversation,
    row: gtk::ListBoxRow,
    title: gtk::Label,
    preview: gtk::Label,
    badge: gtk::Label,
    unread: u64,
    activity: i64,
    /// When this window saw the conversation touched (a counter): orders conversations
    /// whose times tie (the daemon's times are whole seconds).
    touched: u64,
    last_id: Option<String>,
    /// The seq of the last event that carried this conversation: a method's reply that was
    /// asked for before it is older than what the row shows (see `upsert_reply`).
    event_seq: u64,
}

struct Bubble {
    row: gtk::ListBoxRow,
    frame: gtk::Box,
    meta: gtk::Label,
    msg: Message,
}

#[derive(Default)]
struct Open {
    id: String,
    /// Shown messages, oldest first; `ids` has each once.
    msgs: Vec<Message>,
    ids: HashSet<String>,
    bubbles: HashMap<String, Bubble>,
    last_day: Option<String>,
    more_older: bool,
    loading_older: bool,
    loaded: bool,
}

struct Widgets {
    window: adw::ApplicationWindow,
    toasts: adw::ToastOverlay,
    leaflet: adw::Leaflet,
    gone: gtk::Revealer,
    gone_label: gtk::Label,
    list: gtk::ListBox,
    list_stack: gtk::Stack,
    search_bar: gtk::SearchBar,
    search_entry: gtk::SearchEntry,
    results: gtk::ListBox,
    conv_stack: gtk::Stack,
    conv_title: adw::WindowTitle,
    members_box: gtk::Box,
    messages: gtk::ListBox,
    scroller: gtk::ScrolledWindow,
    compose: gtk::TextView,
    send: gtk::Button,
    conv_page: gtk::Box,
}

pub struct Ui {
    w: Widgets,
    client: RefCell<Option<Client>>,
    me: RefCell<String>,
    convs: RefCell<HashMap<String, Entry>>,
    open: RefCell<Open>,
    last_seq: Cell<u64>,
    loaded: Cell<bool>,
    loading: Cell<bool>,
    catching_up: Cell<bool>,
    catch_up_again: Cell<bool>,
    search_generation: Cell<u64>,
    touches: Cell<u64>,
    online: Cell<bool>,
    started: Instant,
    painted: Cell<bool>,
    /// Keeping the bottom in view (the user has not scrolled up).
    stick_bottom: Cell<bool>,
    /// Distance from the bottom to restore after older messages were put on top.
    anchor: Cell<Option<f64>>,
}

impl std::fmt::Debug for Ui {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ui").finish_non_exhaustive()
    }
}

fn icon_button(icon: &str, name: &str) -> gtk::Button {
    let b = gtk::Button::from_icon_name(icon);
    b.set_tooltip_text(Some(name));
    set_name(&b, name);
    b
}

impl Ui {
    pub fn build(app: &adw::Application, started: Instant) -> Rc<Ui> {
        // The list pane.
        let list = gtk::ListBox::new();
        list.set_selection_mode(gtk::SelectionMode::Single);
        list.add_css_class("navigation-sidebar");
        set_name(&list, "Conversations");
        let list_scroller = gtk::ScrolledWindow::builder()
            .hscrollbar_policy(gtk::PolicyType::Never)
            .vexpand(true)
            .child(&list)
            .build();
        let no_convs = adw::StatusPage::builder()
            .icon_name("mail-send-symbolic")
            .title("No conversations")
            .description("Start one with the + button (Ctrl+N).")
            .build();
        // Message search (SearchMessages): results replace the list while a query is typed.
        let results = gtk::ListBox::new();
        results.set_selection_mode(gtk::SelectionMode::Single);
        results.add_css_class("navigation-sidebar");
        set_name(&results, "Search results");
        let results_scroller = gtk::ScrolledWindow::builder()
            .hscrollbar_policy(gtk::PolicyType::Never)
            .vexpand(true)
            .child(&results)
            .build();
        let no_results = adw::StatusPage::builder()
            .icon_name("system-search-symbolic")
            .title("No messages found")
            .build();
        let list_stack = gtk::Stack::new();
        list_stack.add_named(&list_scroller, Some("list"));
        list_stack.add_named(&no_convs, Some("empty"));
        list_stack.add_named(&results_scroller, Some("results"));
        list_stack.add_named(&no_results, Some("no-results"));
        list_stack.set_visible_child_name("empty");
        let search_entry = gtk::SearchEntry::builder()
            .placeholder_text("Search messages")
            .hexpand(true)
            .build();
        set_name(&search_entry, "Search messages");
        let search_bar = gtk::SearchBar::builder().child(&search_entry).build();
        search_bar.connect_entry(&search_entry);
        search_bar.set_show_close_button(true);
        let search_button = gtk::ToggleButton::builder()
            .icon_name("system-search-symbolic")
            .tooltip_text("Search messages")
            .build();
        set_name(&search_button, "Search");
        search_button
            .bind_property("active", &search_bar, "search-mode-enabled")
            .bidirectional()
            .build();
        let new_button = icon_button("list-add-symbolic", "New conversation");
        new_button.set_action_name(Some("win.new-conversation"));
        let list_header = adw::HeaderBar::builder()
            .title_widget(&adw::WindowTitle::new("Sotto", ""))
            .build();
        list_header.pack_start(&new_button);
        list_header.pack_end(&search_button);
        let list_pane = gtk::Box::new(gtk::Orientation::Vertical, 0);
        list_pane.set_width_request(280);
        list_pane.append(&list_header);
        list_pane.append(&search_bar);
        list_pane.append(&list_stack);

        // The conversation pane.
        let back = icon_button("go-previous-symbolic", "Back to the conversations");
        let conv_title = adw::WindowTitle::new("", "");
        let conv_header = adw::HeaderBar::builder().title_widget(&conv_title).build();
        conv_header.pack_start(&back);
        let members_box = gtk::Box::new(gtk::Orientation::Vertical, 6);
        members_box.set_margin_top(6);
        members_box.set_margin_bottom(6);
        members_box.set_margin_start(6);
        members_box.set_margin_end(6);
        let members_pop = gtk::Popover::builder().child(&members_box).build();
        let members_button = gtk::MenuButton::builder()
            .icon_name("system-users-symbolic")
            .popover(&members_pop)
            .tooltip_text("Members")
            .build();
        set_name(&members_button, "Members");
        let conv_menu_box = gtk::Box::new(gtk::Orientation::Vertical, 0);
        for (label, action) in [
            ("_Rename…", "win.rename"),
            ("_Add members…", "win.add-members"),
            ("Re_move members…", "win.remove-members"),
            ("_Leave…", "win.leave"),
        ] {
            let b = gtk::Button::with_mnemonic(label);
            b.add_css_class("flat");
            b.set_action_name(Some(action));
            conv_menu_box.append(&b);
        }
        let conv_menu = gtk::Popover::builder().child(&conv_menu_box).build();
        let conv_menu_button = gtk::MenuButton::builder()
            .icon_name("view-more-symbolic")
            .popover(&conv_menu)
            .tooltip_text("Conversation menu")
            .build();
        set_name(&conv_menu_button, "Conversation menu");
        conv_header.pack_end(&conv_menu_button);
        conv_header.pack_end(&members_button);

        let messages = gtk::ListBox::new();
        messages.set_selection_mode(gtk::SelectionMode::None);
        messages.add_css_class("messages");
        messages.set_valign(gtk::Align::End);
        set_name(&messages, "Messages");
        let scroller = gtk::ScrolledWindow::builder()
            .hscrollbar_policy(gtk::PolicyType::Never)
            .vexpand(true)
            .child(&messages)
            .build();
        let compose = gtk::TextView::builder()
            .wrap_mode(gtk::WrapMode::WordChar)
            .accepts_tab(false)
            .top_margin(8)
            .bottom_margin(8)
            .left_margin(8)
            .right_margin(8)
            .hexpand(true)
            .build();
        set_name(&compose, "Message");
        compose.update_property(&[gtk::accessible::Property::Description(
            "Enter sends, Shift+Enter starts a new line",
        )]);
        let compose_scroller = gtk::ScrolledWindow::builder()
            .hscrollbar_policy(gtk::PolicyType::Never)
            .propagate_natural_height(true)
            .max_content_height(160)
            .hexpand(true)
            .child(&compose)
            .build();
        compose_scroller.add_css_class("card");
        let send = icon_button("mail-send-symbolic", "Send");
        send.add_css_class("suggested-action");
        send.add_css_class("circular");
        send.set_valign(gtk::Align::End);
        let compose_row = gtk::Box::new(gtk::Orientation::Horizontal, 6);
        compose_row.set_margin_top(6);
        compose_row.set_margin_bottom(6);
        compose_row.set_margin_start(6);
        compose_row.set_margin_end(6);
        compose_row.append(&compose_scroller);
        compose_row.append(&send);
        let conv_body = gtk::Box::new(gtk::Orientation::Vertical, 0);
        conv_body.append(&scroller);
        conv_body.append(&compose_row);
        let nothing_open = adw::StatusPage::builder()
            .icon_name("chat-message-new-symbolic")
            .title("No conversation open")
            .description("Pick one from the list.")
            .build();
        let conv_stack = gtk::Stack::new();
        conv_stack.add_named(&nothing_open, Some("none"));
        conv_stack.add_named(&conv_body, Some("conversation"));
        let conv_page = gtk::Box::new(gtk::Orientation::Vertical, 0);
        conv_page.set_hexpand(true);
        conv_page.append(&conv_header);
        conv_page.append(&conv_stack);

        let leaflet = adw::Leaflet::new();
        leaflet.set_can_navigate_back(true);
        leaflet.append(&list_pane);
        leaflet.append(&gtk::Separator::new(gtk::Orientation::Vertical));
        leaflet.append(&conv_page);
        leaflet.set_visible_child(&list_pane);
        // The back button and the window controls only where they make sense.
        let lh = list_header.clone();
        let ch = conv_header.clone();
        let b = back.clone();
        let fold = move |l: &adw::Leaflet| {
            let folded = l.is_folded();
            b.set_visible(folded);
            lh.set_show_end_title_buttons(folded);
            ch.set_show_start_title_buttons(folded);
        };
        fold(&leaflet);
        leaflet.connect_folded_notify(fold);

        let gone_label = gtk::Label::new(Some("The Sotto daemon is not running."));
        gone_label.set_wrap(true);
        let gone_box = gtk::Box::new(gtk::Orientation::Horizontal, 0);
        gone_box.add_css_class("daemon-gone");
        gone_box.append(&gone_label);
        let gone = gtk::Revealer::builder().child(&gone_box).build();

        let content = gtk::Box::new(gtk::Orientation::Vertical, 0);
        content.append(&gone);
        content.append(&leaflet);
        leaflet.set_vexpand(true);
        let toasts = adw::ToastOverlay::new();
        toasts.set_child(Some(&content));
        let window = adw::ApplicationWindow::builder()
            .application(app)
            .title("Sotto")
            .default_width(900)
            .default_height(640)
            .content(&toasts)
            .build();
        // Run from the source tree (target/…): the icon is found in contrib/ too.
        let icons = concat!(env!("CARGO_MANIFEST_DIR"), "/../contrib/desktop/icons");
        if std::path::Path::new(icons).is_dir() {
            gtk::IconTheme::for_display(&gtk::prelude::WidgetExt::display(&window))
                .add_search_path(icons);
        }
        window.set_icon_name(Some(crate::APP_ID));

        let ui = Rc::new(Ui {
            w: Widgets {
                window,
                toasts,
                leaflet,
                gone,
                gone_label,
                list,
                list_stack,
                search_bar,
                search_entry,
                results,
                conv_stack,
                conv_title,
                members_box,
                messages,
                scroller,
                compose,
                send,
                conv_page,
            },
            client: RefCell::new(None),
            me: RefCell::new(String::new()),
            convs: RefCell::new(HashMap::new()),
            open: RefCell::new(Open::default()),
            last_seq: Cell::new(0),
            loaded: Cell::new(false),
            loading: Cell::new(false),
            catching_up: Cell::new(false),
            catch_up_again: Cell::new(false),
            search_generation: Cell::new(0),
            touches: Cell::new(0),
            online: Cell::new(false),
            started,
            painted: Cell::new(false),
            stick_bottom: Cell::new(true),
            anchor: Cell::new(None),
        });
        // The window owns the UI state (every other closure holds a weak reference).
        let keep = RefCell::new(Some(ui.clone()));
        ui.w.window.connect_destroy(move |_| {
            keep.take();
        });
        ui.w.window.connect_is_active_notify(|w| {
            trace(&format!("window active: {}", w.is_active()));
        });
        ui.wire(&back, app);
        ui.w.window.present();
        ui.set_online(false, "Connecting to the Sotto daemon…");
        ui.connect(app);
        ui
    }

    fn wire(self: &Rc<Self>, back: &gtk::Button, app: &adw::Application) {
        let w = &self.w;
        // Sorted by activity, newest first.
        let weak = Rc::downgrade(self);
        w.list.set_sort_func(move |a, b| {
            let Some(ui) = weak.upgrade() else {
                return gtk::Ordering::Equal;
            };
            let Ok(convs) = ui.convs.try_borrow() else {
                return gtk::Ordering::Equal;
            };
            let key = |r: &gtk::ListBoxRow| {
                convs
                    .get(r.widget_name().as_str())
                    .map(|e| (e.activity, e.touched, e.title.text().to_string()))
                    .unwrap_or_default()
            };
            let (ka, kb) = (key(a), key(b));
            match kb.0.cmp(&ka.0).then(kb.1.cmp(&ka.1)).then(ka.2.cmp(&kb.2)) {
                std::cmp::Ordering::Less => gtk::Ordering::Smaller,
                std::cmp::Ordering::Equal => gtk::Ordering::Equal,
                std::cmp::Ordering::Greater => gtk::Ordering::Larger,
            }
        });
        let weak = Rc::downgrade(self);
        w.list.connect_row_selected(move |_, row| {
            if let (Some(ui), Some(row)) = (weak.upgrade(), row) {
                ui.open_conversation(row.widget_name().as_str());
            }
        });
        let weak = Rc::downgrade(self);
        w.list.connect_row_activated(move |_, row| {
            if let Some(ui) = weak.upgrade() {
                ui.open_conversation(row.widget_name().as_str());
                ui.w.compose.grab_focus();
            }
        });
        let weak = Rc::downgrade(self);
        back.connect_clicked(move |_| {
            if let Some(ui) = weak.upgrade() {
                ui.w.leaflet.navigate(adw::NavigationDirection::Back);
            }
        });

        // Search: each change of the query asks the daemon; the newest query's results win.
        let weak = Rc::downgrade(self);
        w.search_entry.connect_search_changed(move |e| {
            if let Some(ui) = weak.upgrade() {
                ui.search(e.text().trim());
            }
        });
        let weak = Rc::downgrade(self);
        w.search_bar.connect_search_mode_enabled_notify(move |bar| {
            if let Some(ui) = weak.upgrade()
                && !bar.is_search_mode()
            {
                ui.w.search_entry.set_text("");
                ui.search("");
            }
        });
        let weak = Rc::downgrade(self);
        w.results.connect_row_activated(move |_, row| {
            if let Some(ui) = weak.upgrade() {
                ui.open_result(row);
            }
        });
        let weak = Rc::downgrade(self);
        w.results.connect_row_selected(move |_, row| {
            if let (Some(ui), Some(row)) = (weak.upgrade(), row) {
                ui.open_result(row);
            }
        });

        // Compose: Enter sends, Shift+Enter is a newline.
        let keys = gtk::EventControllerKey::new();
        keys.set_propagation_phase(gtk::PropagationPhase::Capture);
        let weak = Rc::downgrade(self);
        keys.connect_key_pressed(move |_, key, _, state| {
            let enter = matches!(key, gdk::Key::Return | gdk::Key::KP_Enter);
            if !enter || state.contains(gdk::ModifierType::SHIFT_MASK) {
                return glib::Propagation::Proceed;
            }
            if let Some(ui) = weak.upgrade() {
                ui.send_composed();
            }
            glib::Propagation::Stop
        });
        w.compose.add_controller(keys);
        let weak = Rc::downgrade(self);
        w.send.connect_clicked(move |_| {
            if let Some(ui) = weak.upgrade() {
                ui.send_composed();
            }
        });

        // Scrolling: older messages at the top, stay at the bottom for new ones.
        let adj = w.scroller.vadjustment();
        let weak = Rc::downgrade(self);
        adj.connect_value_changed(move |a| {
            if let Some(ui) = weak.upgrade() {
                if ui.anchor.get().is_none() {
                    ui.stick_bottom
                        .set(a.value() >= a.upper() - a.page_size() - 24.0);
                }
                if a.value() <= 1.0 && a.upper() > a.page_size() {
                    ui.load_older();
                }
            }
        });
        let weak = Rc::downgrade(self);
        adj.connect_changed(move |a| {
            if let Some(ui) = weak.upgrade() {
                if let Some(from_bottom) = ui.anchor.take() {
                    a.set_value(a.upper() - from_bottom);
                } else if ui.stick_bottom.get() {
                    a.set_value(a.upper() - a.page_size());
                }
            }
        });
        let weak = Rc::downgrade(self);
        w.scroller.connect_edge_reached(move |_, pos| {
            if pos == gtk::PositionType::Top
                && let Some(ui) = weak.upgrade()
            {
                ui.load_older();
            }
        });

        // Actions (and their keyboard shortcuts).
        let win = &w.window;
        let add = |name: &str, f: fn(&Rc<Ui>)| {
            let a = gio::SimpleAction::new(name, None);
            let weak = Rc::downgrade(self);
            a.connect_activate(move |_, _| {
                if let Some(ui) = weak.upgrade() {
                    f(&ui);
                }
            });
            win.add_action(&a);
        };
        add("new-conversation", Ui::new_conversation_dialog);
        add("rename", Ui::rename_dialog);
        add("add-members", |ui| ui.members_dialog(true));
        add("remove-members", |ui| ui.members_dialog(false));
        add("leave", Ui::leave_dialog);
        add("focus-list", |ui| {
            ui.w.leaflet.navigate(adw::NavigationDirection::Back);
            if let Some(r) =
                ui.w.list
                    .selected_row()
                    .or_else(|| ui.w.list.row_at_index(0))
            {
                r.grab_focus();
            }
        });
        add("search", |ui| {
            ui.w.leaflet.navigate(adw::NavigationDirection::Back);
            ui.w.search_bar.set_search_mode(true);
            ui.w.search_entry.grab_focus();
        });
        app.set_accels_for_action("win.new-conversation", &["<Control>n"]);
        app.set_accels_for_action("win.search", &["<Control>f"]);
        app.set_accels_for_action("win.focus-list", &["<Control>l"]);
        app.set_accels_for_action("window.close", &["<Control>w"]);
    }

    fn toast(&self, text: &str) {
        self.w.toasts.add_toast(adw::Toast::new(text));
    }

    fn client(&self) -> Option<Client> {
        self.client.borrow().clone()
    }

    fn set_online(&self, online: bool, why: &str) {
        self.online.set(online);
        self.w.gone_label.set_text(why);
        set_name(&self.w.gone_label, why);
        self.w.gone.set_reveal_child(!online);
        self.w.gone.set_visible(!online);
        self.w.send.set_sensitive(online);
        self.w.compose.set_editable(online);
    }

    /// The proxy, the name watch and the signal follower.
    fn connect(self: &Rc<Self>, app: &adw::Application) {
        let Some(conn) = app.dbus_connection() else {
            self.set_online(
                false,
                "No session bus: Sotto needs one to reach its daemon.",
            );
            return;
        };
        let ui = self.clone();
        glib::spawn_future_local(async move {
            trace("creating the proxy");
            let client = match Client::new(&conn).await {
                Ok(c) => c,
                Err(e) => {
                    ui.set_online(false, &format!("Cannot reach the Sotto daemon: {e}"));
                    return;
                }
            };
            // Signals arrive on this (the main) thread; the guard lets the handler be Send.
            let guard = glib::thread_guard::ThreadGuard::new(Rc::downgrade(&ui));
            client
                .proxy
                .connect_g_signal(None, move |_, _, name, params| {
                    if let Some(ui) = guard.get_ref().upgrade()
                        && let Some(ev) = Event::from_signal(name, params)
                    {
                        ui.on_signal(ev);
                    }
                });
            ui.client.replace(Some(client));
            trace("proxy ready; watching the name");
            // The daemon's comings and goings (NameOwnerChanged); AUTO_START asks the bus to
            // start it (D-Bus activation) when nobody owns the name.
            let weak_a = Rc::downgrade(&ui);
            let weak_v = Rc::downgrade(&ui);
            let watch = gio::bus_watch_name_on_connection(
                &conn,
                bus::NAME,
                gio::BusNameWatcherFlags::AUTO_START,
                move |_, _, owner| {
                    trace(&format!("the daemon is on the bus ({owner})"));
                    if let Some(ui) = weak_a.upgrade() {
                        ui.daemon_appeared();
                    }
                },
                move |_, _| {
                    trace("the daemon is not on the bus");
                    if let Some(ui) = weak_v.upgrade() {
                        ui.set_online(
                            false,
                            "The Sotto daemon is not running. Waiting for it to come back…",
                        );
                    }
                },
            );
            // The watch lives as long as the window.
            let watch = RefCell::new(Some(watch));
            ui.w.window.connect_destroy(move |_| {
                if let Some(w) = watch.take() {
                    gio::bus_unwatch_name(w);
                }
            });
        });
    }

    fn daemon_appeared(self: &Rc<Self>) {
        if self.loaded.get() {
            self.set_online(true, "");
            self.catch_up();
        } else {
            self.initial_load();
        }
    }

    /// Status, account, conversations; then everything after the status's `last_event_seq`.
    fn initial_load(self: &Rc<Self>) {
        if self.loading.replace(true) {
            return;
        }
        let ui = self.clone();
        glib::spawn_future_local(async move {
            trace("loading");
            let r = ui.load().await;
            trace(&format!("loaded: {r:?}"));
            ui.loading.set(false);
            match r {
                Ok(true) => {
                    ui.set_online(true, "");
                    ui.catch_up();
                }
                Ok(false) => ui.first_run_dialog(),
                Err(e) => ui.set_online(false, &format!("The Sotto daemon failed: {e}")),
            }
        });
    }

    /// `Ok(false)`: there is no account yet.
    async fn load(self: &Rc<Self>) -> Result<bool, CallError> {
        let Some(client) = self.client() else {
            return Ok(true);
        };
        let status = client.status().await?;
        let seq = status.u64("last_event_seq").unwrap_or(0);
        let account = match client.account().await {
            Ok(a) => a,
            Err(e) if e.kind == "NoAccount" => return Ok(false),
            Err(e) => return Err(e),
        };
        self.me.replace(account.str("address").unwrap_or_default());
        // Each with its unread count, last message and activity time (one call).
        let convs = client.conversations().await?;
        self.replace_conversations(convs);
        self.last_seq.set(seq);
        self.loaded.set(true);
        self.after_first_list();
        let open = self.open.borrow().id.clone();
        if !open.is_empty() {
            self.open.borrow_mut().id.clear();
            self.open_conversation(&open);
        }
        Ok(true)
    }

    /// Reports (with `SOTTO_GTK_TIMING=1`) when the first list has been painted.
    fn after_first_list(self: &Rc<Self>) {
        if self.painted.get() || std::env::var_os("SOTTO_GTK_TIMING").is_none() {
            return;
        }
        let Some(clock) = self.w.window.frame_clock() else {
            trace("no frame clock");
            return;
        };
        let weak = Rc::downgrade(self);
        let handler: Rc<RefCell<Option<glib::SignalHandlerId>>> = Rc::new(RefCell::new(None));
        let h = handler.clone();
        let id = clock.connect_after_paint(move |clock| {
            if let Some(ui) = weak.upgrade()
                && !ui.painted.replace(true)
            {
                eprintln!(
                    "sotto-gtk: first conversation list painted after {} ms ({} conversations)",
                    ui.started.elapsed().as_millis(),
                    ui.convs.borrow().len()
                );
                if let Some(id) = h.take() {
                    clock.disconnect(id);
                }
            }
        });
        handler.replace(Some(id));
        self.w.window.queue_draw();
    }

    fn replace_conversations(self: &Rc<Self>, convs: Vec<Conversation>) {
        let ids: HashSet<String> = convs.iter().map(|c| c.id.clone()).collect();
        let gone: Vec<String> = self
            .convs
            .borrow()
            .keys()
            .filter(|k| !ids.contains(*k))
            .cloned()
            .collect();
        for id in gone {
            self.remove_conversation(&id);
        }
        // The daemon's list is newest first: the first one is touched last.
        for c in convs.into_iter().rev() {
            let id = c.id.clone();
            self.upsert_conversation(c);
            self.touch(&id);
        }
        self.w.list.invalidate_sort();
    }

    fn touch(&self, id: &str) {
        let n = self.touches.get() + 1;
        self.touches.set(n);
        if let Some(e) = self.convs.borrow_mut().get_mut(id) {
            e.touched = n;
        }
    }

    fn remove_conversation(&self, id: &str) {
        let removed = self.convs.borrow_mut().remove(id);
        if let Some(e) = removed {
            self.w.list.remove(&e.row);
        }
        if self.open.borrow().id == id {
            self.open.replace(Open::default());
            self.w.conv_stack.set_visible_child_name("none");
            self.w.conv_title.set_title("");
            self.w.conv_title.set_subtitle("");
        }
        self.update_list_stack();
    }

    fn update_list_stack(&self) {
        if self.w.search_bar.is_search_mode() && !self.w.search_entry.text().trim().is_empty() {
            return; // the results are showing
        }
        let empty = self.convs.borrow().is_empty();
        self.w
            .list_stack
            .set_visible_child_name(if empty { "empty" } else { "list" });
    }

    /// A conversation from a method's reply, asked for when this window had seen events up
    /// to `asked_at`. Signals and replies are read by different tasks, so an event sent after
    /// the reply (the group set up after `CreateConversation` answered "pending") can be
    /// handled first; a row that such an event has already updated is newer than the reply
    /// and is kept (every later change comes as another event).
    fn upsert_reply(self: &Rc<Self>, c: Conversation, asked_at: u64) {
        let newer = self
            .convs
            .borrow()
            .get(&c.id)
            .is_some_and(|e| e.event_seq > asked_at);
        if newer {
            trace(&format!("kept {}: an event is newer than the reply", c.id));
            return;
        }
        self.upsert_conversation(c);
    }

    /// Adds or updates a conversation's row from the daemon's view of it.
    fn upsert_conversation(self: &Rc<Self>, c: Conversation) {
        let me = self.me.borrow().clone();
        let id = c.id.clone();
        let known = self.convs.borrow().contains_key(&id);
        if !known {
            let title = gtk::Label::builder()
                .xalign(0.0)
                .ellipsize(gtk::pango::EllipsizeMode::End)
                .build();
            title.add_css_class("heading");
            let preview = gtk::Label::builder()
                .xalign(0.0)
                .ellipsize(gtk::pango::EllipsizeMode::End)
                .build();
            preview.add_css_class("preview");
            let badge = gtk::Label::new(None);
            badge.add_css_class("unread-badge");
            badge.set_valign(gtk::Align::Center);
            badge.set_visible(false);
            let texts = gtk::Box::new(gtk::Orientation::Vertical, 2);
            texts.set_hexpand(true);
            texts.append(&title);
            texts.append(&preview);
            let hbox = gtk::Box::new(gtk::Orientation::Horizontal, 8);
            hbox.set_margin_top(6);
            hbox.set_margin_bottom(6);
            hbox.append(&texts);
            hbox.append(&badge);
            let row = gtk::ListBoxRow::builder().child(&hbox).build();
            row.set_widget_name(&id);
            self.convs.borrow_mut().insert(
                id.clone(),
                Entry {
                    conv: Conversation::default(),
                    row: row.clone(),
                    title,
                    preview,
                    badge,
                    unread: 0,
                    activity: 0,
                    touched: {
                        let n = self.touches.get() + 1;
                        self.touches.set(n);
                        n
                    },
                    last_id: None,
                    event_seq: 0,
                },
            );
            // Appending sorts, and the sort reads `convs`: not while it is borrowed.
            self.w.list.append(&row);
        }
        let mut convs = self.convs.borrow_mut();
        let Some(e) = convs.get_mut(&id) else {
            return;
        };
        e.title.set_text(&c.title(&me));
        if let Some(n) = c.unread {
            e.unread = n;
        }
        if let Some(m) = &c.last_message {
            e.last_id = Some(m.id.clone());
            e.preview.set_text(&one_line(&m.text, 80));
            e.activity = e.activity.max(epoch_us(message_time(m)));
        } else if c.state == "pending" || c.pending > 0 {
            if e.preview.text().is_empty() {
                e.preview.set_text("Setting up…");
            }
        } else if e.preview.text() == "Setting up…" {
            e.preview.set_text("");
        }
        if let Some(t) = &c.last_activity_at {
            e.activity = e.activity.max(epoch_us(t));
        }
        e.conv = c;
        Self::refresh_entry(e, &me);
        drop(convs);
        self.update_list_stack();
        if self.open.borrow().id == id {
            self.refresh_header();
        }
    }

    fn refresh_entry(e: &Entry, me: &str) {
        e.badge.set_visible(e.unread > 0);
        e.badge.set_text(&e.unread.to_string());
        let unread = match e.unread {
            0 => String::new(),
            1 => ", 1 unread message".into(),
            n => format!(", {n} unread messages"),
        };
        let preview = e.preview.text();
        let last = if preview.is_empty() {
            String::new()
        } else {
            format!(", last: {preview}")
        };
        set_name(&e.row, &format!("{}{unread}{last}", e.conv.title(me)));
        set_name(&e.badge, &format!("{} unread", e.unread));
    }

    fn refresh_header(self: &Rc<Self>) {
        let id = self.open.borrow().id.clone();
        let convs = self.convs.borrow();
        let Some(e) = convs.get(&id) else {
            return;
        };
        let me = self.me.borrow().clone();
        self.w.conv_title.set_title(&e.conv.title(&me));
        self.w.conv_title.set_subtitle(&e.conv.subtitle());
        set_name(
            &self.w.conv_page,
            &format!("Conversation {}", e.conv.title(&me)),
        );
        // The members popover: each member, with their safety number.
        while let Some(c) = self.w.members_box.first_child() {
            self.w.members_box.remove(&c);
        }
        for m in &e.conv.members {
            let row = gtk::Box::new(gtk::Orientation::Horizontal, 6);
            let label = gtk::Label::builder()
                .label(if *m == me {
                    format!("{m} (you)")
                } else {
                    m.clone()
                })
                .xalign(0.0)
                .hexpand(true)
                .selectable(true)
                .build();
            row.append(&label);
            if *m != me {
                let b = icon_button("security-high-symbolic", &format!("Safety number of {m}"));
                b.add_css_class("flat");
                let member = m.clone();
                let weak = Rc::downgrade(self);
                b.connect_clicked(move |_| {
                    if let Some(ui) = weak.upgrade() {
                        ui.safety_dialog(&member);
                    }
                });
                row.append(&b);
            }
            self.w.members_box.append(&row);
        }
    }
}

/// Message search.
impl Ui {
    fn search(self: &Rc<Self>, query: &str) {
        let generation = self.search_generation.get() + 1;
        self.search_generation.set(generation);
        if query.is_empty() {
            self.update_list_stack();
            return;
        }
        let Some(client) = self.client() else { return };
        let ui = self.clone();
        let query = query.to_owned();
        glib::spawn_future_local(async move {
            let r = client.search(&query, 50).await;
            if ui.search_generation.get() != generation {
                return; // a newer query is on its way
            }
            match r {
                Ok(hits) => ui.show_results(hits),
                Err(e) => ui.toast(&format!("Search failed: {e}")),
            }
        });
    }

    fn show_results(self: &Rc<Self>, hits: Vec<(Message, String)>) {
        while let Some(c) = self.w.results.first_child() {
            self.w.results.remove(&c);
        }
        let me = self.me.borrow().clone();
        let found = !hits.is_empty();
        for (m, snippet) in hits {
            let title = self
                .convs
                .borrow()
                .get(&m.conversation)
                .map(|e| e.conv.title(&me))
                .unwrap_or_else(|| m.conversation.clone());
            let who = if m.sender == me {
                "You".to_owned()
            } else {
                m.sender.clone()
            };
            let head = gtk::Label::builder()
                .label(format!("{title} · {}", hhmm(message_time(&m))))
                .xalign(0.0)
                .ellipsize(gtk::pango::EllipsizeMode::End)
                .build();
            head.add_css_class("heading");
            let text = gtk::Label::builder()
                .label(format!("{who}: {snippet}"))
                .xalign(0.0)
                .wrap(true)
                .wrap_mode(gtk::pango::WrapMode::WordChar)
                .build();
            text.add_css_class("preview");
            let vbox = gtk::Box::new(gtk::Orientation::Vertical, 2);
            vbox.set_margin_top(6);
            vbox.set_margin_bottom(6);
            vbox.append(&head);
            vbox.append(&text);
            let row = gtk::ListBoxRow::builder().child(&vbox).build();
            row.set_widget_name(&m.conversation);
            set_name(&row, &format!("{who} in {title}: {snippet}"));
            self.w.results.append(&row);
        }
        self.w
            .list_stack
            .set_visible_child_name(if found { "results" } else { "no-results" });
    }

    /// A search result chosen: its conversation opens (the search stays for the next one).
    fn open_result(self: &Rc<Self>, row: &gtk::ListBoxRow) {
        let id = row.widget_name().to_string();
        self.open_conversation(&id);
        self.w.compose.grab_focus();
    }
}

/// Following the daemon's event log: signals when they are in order, `GetEvents` otherwise.
impl Ui {
    fn on_signal(self: &Rc<Self>, ev: Event) {
        if !self.loaded.get() || self.loading.get() {
            return; // the load reads everything after its status's seq
        }
        let last = self.last_seq.get();
        if ev.seq <= last {
            return; // already applied
        }
        if ev.seq == last + 1 && !self.catching_up.get() {
            self.last_seq.set(ev.seq);
            self.apply(ev);
        } else {
            // A gap (an event without a signal, or one this app missed): read the log.
            self.catch_up();
        }
    }

    /// `GetEvents(last_seq)` until nothing is left; one run at a time.
    fn catch_up(self: &Rc<Self>) {
        if self.catching_up.replace(true) {
            self.catch_up_again.set(true);
            return;
        }
        let ui = self.clone();
        glib::spawn_future_local(async move {
            loop {
                ui.catch_up_again.set(false);
                let Some(client) = ui.client() else { break };
                match client.events(ui.last_seq.get()).await {
                    Ok(events) => {
                        let more = events.len() >= 1000;
                        for ev in events {
                            if ev.seq > ui.last_seq.get() {
                                ui.last_seq.set(ev.seq);
                                ui.apply(ev);
                            }
                        }
                        if !more && !ui.catch_up_again.get() {
                            break;
                        }
                    }
                    Err(e) if e.kind == "EventsExpired" => {
                        // Too far behind for the log: start over from the daemon's state.
                        ui.catching_up.set(false);
                        ui.loaded.set(false);
                        ui.initial_load();
                        return;
                    }
                    Err(e) => {
                        // The daemon went away (or failed); the name watch brings us back.
                        if e.kind != "ServiceUnknown" && e.kind != "NoReply" {
                            ui.toast(&format!("Could not read the daemon's events: {e}"));
                        }
                        break;
                    }
                }
            }
            ui.catching_up.set(false);
        });
    }

    fn apply(self: &Rc<Self>, ev: Event) {
        let seq = ev.seq;
        match ev.what {
            EventKind::Message(m, received) => self.add_message(m, received),
            EventKind::State {
                conversation,
                id,
                state,
                error,
            } => {
                if self.open.borrow().id == conversation {
                    let mut open = self.open.borrow_mut();
                    if let Some(m) = open.msgs.iter_mut().find(|m| m.id == id) {
                        m.state = state.clone();
                        m.error = error.clone();
                    }
                    if let Some(b) = open.bubbles.get_mut(&id) {
                        b.msg.state = state;
                        b.msg.error = error;
                        let msg = b.msg.clone();
                        Self::refresh_bubble(b, &msg, &self.me.borrow());
                    }
                }
            }
            EventKind::Conversation {
                kind,
                conversation,
                id,
            } => {
                if kind == "conversation.removed" {
                    self.remove_conversation(&id);
                } else if let Some(c) = conversation {
                    self.upsert_conversation(*c);
                    if let Some(e) = self.convs.borrow_mut().get_mut(&id) {
                        e.event_seq = e.event_seq.max(seq);
                    }
                    self.w.list.invalidate_sort();
                } else {
                    self.refetch_conversation(&id);
                }
            }
            EventKind::Account => {
                if !self.loaded.get() {
                    self.initial_load();
                }
            }
            EventKind::Relay { .. } | EventKind::Other => {}
        }
    }

    fn refetch_conversation(self: &Rc<Self>, id: &str) {
        let Some(client) = self.client() else { return };
        let ui = self.clone();
        let id = id.to_owned();
        let asked_at = self.last_seq.get();
        glib::spawn_future_local(async move {
            if let Ok(c) = client.conversation(&id).await {
                ui.upsert_reply(c, asked_at);
                ui.w.list.invalidate_sort();
            }
        });
    }

    /// A message event: the list's preview, badge and order; the open conversation's view.
    fn add_message(self: &Rc<Self>, m: Message, received: bool) {
        let conv = m.conversation.clone();
        let is_open = self.open.borrow().id == conv;
        let known = self.convs.borrow().contains_key(&conv);
        if !known {
            self.refetch_conversation(&conv);
        }
        {
            let me = self.me.borrow().clone();
            let mut convs = self.convs.borrow_mut();
            if let Some(e) = convs.get_mut(&conv) {
                let new = e.last_id.as_deref() != Some(m.id.as_str());
                if new {
                    let n = self.touches.get() + 1;
                    self.touches.set(n);
                    e.touched = n;
                    e.last_id = Some(m.id.clone());
                    e.preview.set_text(&one_line(&m.text, 80));
                    e.activity = e.activity.max(epoch_us(message_time(&m)));
                    if received && !(is_open && self.w.window.is_active()) {
                        e.unread += 1;
                    }
                }
                Self::refresh_entry(e, &me);
            }
        }
        self.w.list.invalidate_sort();
        if is_open {
            self.show_new_message(m);
            if received && self.w.window.is_active() {
                self.mark_read(&conv);
            }
        }
    }

    fn mark_read(self: &Rc<Self>, conv: &str) {
        if let Some(e) = self.convs.borrow_mut().get_mut(conv) {
            e.unread = 0;
            Self::refresh_entry(e, &self.me.borrow());
        }
        let Some(client) = self.client() else { return };
        let conv = conv.to_owned();
        let ui = self.clone();
        let asked_at = self.last_seq.get();
        glib::spawn_future_local(async move {
            // The daemon's count from now on (it also signals `conversation.read`).
            match client.mark_read(&conv).await {
                Ok(c) if c.id == conv => {
                    ui.upsert_reply(c, asked_at);
                }
                Ok(_) => {}
                Err(e) => trace(&format!("MarkRead {conv}: {e}")),
            }
        });
    }
}

/// The open conversation.
impl Ui {
    fn open_conversation(self: &Rc<Self>, id: &str) {
        if id.is_empty() {
            return;
        }
        if self.open.borrow().id == id {
            self.w.leaflet.set_visible_child(&self.w.conv_page);
            return;
        }
        self.open.replace(Open {
            id: id.to_owned(),
            more_older: true,
            ..Open::default()
        });
        while let Some(c) = self.w.messages.first_child() {
            self.w.messages.remove(&c);
        }
        self.stick_bottom.set(true);
        self.w.conv_stack.set_visible_child_name("conversation");
        self.w.leaflet.set_visible_child(&self.w.conv_page);
        self.refresh_header();
        let row = self.convs.borrow().get(id).map(|e| e.row.clone());
        if let Some(row) = row
            && self.w.list.selected_row().as_ref() != Some(&row)
        {
            self.w.list.select_row(Some(&row));
        }
        self.mark_read(id);
        // Opened from elsewhere than the list's own keyboard navigation (a click, an
        // assistive technology's selection, a new conversation): ready to type.
        let in_list = gtk::prelude::GtkWindowExt::focus(&self.w.window).is_some_and(|f| {
            f.is_ancestor(&self.w.list) || f == *self.w.list.upcast_ref::<gtk::Widget>()
        });
        if !in_list {
            self.w.compose.grab_focus();
        }
        let Some(client) = self.client() else { return };
        let ui = self.clone();
        let id = id.to_owned();
        glib::spawn_future_local(async move {
            match client.messages(&id, None, PAGE).await {
                Ok(msgs) => {
                    if ui.open.borrow().id != id {
                        return;
                    }
                    let more = msgs.len() as u32 >= PAGE;
                    {
                        let mut open = ui.open.borrow_mut();
                        // Live ones that came in meanwhile go after the page.
                        let live: Vec<Message> = std::mem::take(&mut open.msgs);
                        open.ids.clear();
                        let mut all = Vec::new();
                        for m in msgs.into_iter().chain(live) {
                            if open.ids.insert(m.id.clone()) {
                                all.push(m);
                            }
                        }
                        open.msgs = all;
                        open.more_older = more;
                        open.loaded = true;
                    }
                    ui.render_messages();
                }
                Err(e) => ui.toast(&format!("Could not load the messages: {e}")),
            }
        });
    }

    fn load_older(self: &Rc<Self>) {
        let (id, before) = {
            let open = self.open.borrow();
            if open.id.is_empty() || !open.loaded || !open.more_older || open.loading_older {
                return;
            }
            let Some(first) = open.msgs.first() else {
                return;
            };
            (open.id.clone(), first.id.clone())
        };
        self.open.borrow_mut().loading_older = true;
        let Some(client) = self.client() else { return };
        let ui = self.clone();
        glib::spawn_future_local(async move {
            let r = client.messages(&id, Some(&before), PAGE).await;
            if ui.open.borrow().id != id {
                return;
            }
            ui.open.borrow_mut().loading_older = false;
            match r {
                Ok(older) => {
                    {
                        let mut open = ui.open.borrow_mut();
                        open.more_older = older.len() as u32 >= PAGE;
                        let mut all: Vec<Message> = Vec::new();
                        for m in older {
                            if open.ids.insert(m.id.clone()) {
                                all.push(m);
                            }
                        }
                        if all.is_empty() {
                            return;
                        }
                        all.append(&mut open.msgs);
                        open.msgs = all;
                    }
                    let a = ui.w.scroller.vadjustment();
                    ui.anchor.set(Some(a.upper() - a.value()));
                    ui.stick_bottom.set(false);
                    ui.render_messages();
                }
                Err(e) => ui.toast(&format!("Could not load older messages: {e}")),
            }
        });
    }

    /// Rebuilds the message list of the open conversation.
    fn render_messages(self: &Rc<Self>) {
        while let Some(c) = self.w.messages.first_child() {
            self.w.messages.remove(&c);
        }
        let msgs = {
            let mut open = self.open.borrow_mut();
            open.bubbles.clear();
            open.last_day = None;
            open.msgs.clone()
        };
        for m in msgs {
            self.append_bubble(m);
        }
    }

    /// A message that arrived (or was sent) while the conversation is open: once.
    fn show_new_message(self: &Rc<Self>, m: Message) {
        {
            let mut open = self.open.borrow_mut();
            if let Some(b) = open.bubbles.get_mut(&m.id) {
                // Seen already (a send's reply and its event): update, never repeat.
                b.msg.state = m.state.clone();
                b.msg.error = m.error.clone();
                let msg = b.msg.clone();
                Self::refresh_bubble(b, &msg, &self.me.borrow());
                return;
            }
            if !open.ids.insert(m.id.clone()) {
                return;
            }
            open.msgs.push(m.clone());
            if !open.loaded {
                return; // the first page's reply renders it
            }
        }
        self.append_bubble(m);
    }

    fn append_bubble(self: &Rc<Self>, m: Message) {
        let me = self.me.borrow().clone();
        let day = day_key(message_time(&m));
        let new_day = {
            let mut open = self.open.borrow_mut();
            let changed = !day.is_empty() && open.last_day.as_deref() != Some(day.as_str());
            if changed {
                open.last_day = Some(day.clone());
            }
            changed
        };
        if new_day {
            let text = day_label(message_time(&m));
            let l = gtk::Label::new(Some(&text));
            l.add_css_class("day-separator");
            let row = gtk::ListBoxRow::builder()
                .child(&l)
                .activatable(false)
                .selectable(false)
                .build();
            set_name(&row, &text);
            self.w.messages.append(&row);
        }
        let mine = m.sender == me;
        let frame = gtk::Box::new(gtk::Orientation::Vertical, 2);
        frame.add_css_class("bubble");
        if mine {
            frame.add_css_class("mine");
        }
        frame.set_halign(if mine {
            gtk::Align::End
        } else {
            gtk::Align::Start
        });
        frame.set_margin_start(if mine { 60 } else { 8 });
        frame.set_margin_end(if mine { 8 } else { 60 });
        if !mine {
            let sender = gtk::Label::builder().label(&m.sender).xalign(0.0).build();
            sender.add_css_class("sender");
            frame.append(&sender);
        }
        let text = gtk::Label::builder()
            .label(&m.text)
            .wrap(true)
            .wrap_mode(gtk::pango::WrapMode::WordChar)
            .xalign(0.0)
            .build();
        frame.append(&text);
        let meta = gtk::Label::builder().xalign(1.0).wrap(true).build();
        meta.add_css_class("meta");
        frame.append(&meta);
        let row = gtk::ListBoxRow::builder()
            .child(&frame)
            .activatable(false)
            .selectable(false)
            .build();
        self.w.messages.append(&row);
        let mut b = Bubble {
            row,
            frame,
            meta,
            msg: m.clone(),
        };
        Self::refresh_bubble(&mut b, &m, &me);
        self.open.borrow_mut().bubbles.insert(m.id.clone(), b);
    }

    fn refresh_bubble(b: &mut Bubble, m: &Message, me: &str) {
        let time = hhmm(message_time(m));
        let state = match (m.state.as_str(), &m.error) {
            ("failed", Some((_, why))) => format!("failed: {why}"),
            ("failed", None) => "failed".to_owned(),
            ("queued", _) => "queued".to_owned(),
            ("sent", _) => "sent".to_owned(),
            _ => String::new(),
        };
        let mine = m.sender == me;
        let meta = if mine && !state.is_empty() {
            format!("{time} · {state}")
        } else {
            time.clone()
        };
        b.meta.set_text(&meta);
        if m.state == "failed" {
            b.frame.add_css_class("failed");
        } else {
            b.frame.remove_css_class("failed");
        }
        let who = if mine { "You" } else { m.sender.as_str() };
        let state_part = if mine && !state.is_empty() {
            format!(" ({state})")
        } else {
            String::new()
        };
        set_name(
            &b.row,
            &format!("{who} at {time}: {}{state_part}", one_line(&m.text, 200)),
        );
    }

    fn send_composed(self: &Rc<Self>) {
        let buffer = self.w.compose.buffer();
        let text = buffer
            .text(&buffer.start_iter(), &buffer.end_iter(), false)
            .to_string();
        let id = self.open.borrow().id.clone();
        if text.trim().is_empty() || id.is_empty() || !self.online.get() {
            return;
        }
        buffer.set_text("");
        let Some(client) = self.client() else { return };
        let ui = self.clone();
        let key = glib::uuid_string_random().to_string();
        glib::spawn_future_local(async move {
            match client.send(&id, &text, &key).await {
                Ok(m) => ui.add_message(m, false),
                Err(e) => {
                    ui.toast(&format!("Not sent: {e}"));
                    let b = ui.w.compose.buffer();
                    if b.char_count() == 0 {
                        b.set_text(&text);
                    }
                }
            }
        });
    }
}

/// Splits a list of addresses typed by hand (commas, spaces or new lines).
fn addresses(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Dialogs.
impl Ui {
    /// A dialog with labelled entries; `done` gets their texts when `ok` is chosen.
    fn entry_dialog(
        self: &Rc<Self>,
        heading: &str,
        body: &str,
        fields: &[(&str, &str)],
        ok: &str,
        destructive: bool,
        done: impl Fn(&Rc<Ui>, Vec<String>) + 'static,
    ) {
        let d = adw::MessageDialog::new(Some(&self.w.window), Some(heading), Some(body));
        let vbox = gtk::Box::new(gtk::Orientation::Vertical, 6);
        let mut entries = Vec::new();
        for (label, initial) in fields {
            let l = gtk::Label::builder().label(*label).xalign(0.0).build();
            let e = gtk::Entry::builder()
                .text(*initial)
                .activates_default(true)
                .build();
            set_name(&e, label);
            vbox.append(&l);
            vbox.append(&e);
            entries.push(e);
        }
        if !entries.is_empty() {
            d.set_extra_child(Some(&vbox));
        }
        d.add_response("cancel", "_Cancel");
        d.add_response("ok", ok);
        d.set_response_appearance(
            "ok",
            if destructive {
                adw::ResponseAppearance::Destructive
            } else {
                adw::ResponseAppearance::Suggested
            },
        );
        d.set_default_response(Some("ok"));
        d.set_close_response("cancel");
        let weak = Rc::downgrade(self);
        let es = entries.clone();
        d.connect_response(None, move |_, r| {
            if r == "ok"
                && let Some(ui) = weak.upgrade()
            {
                done(&ui, es.iter().map(|e| e.text().to_string()).collect());
            }
        });
        d.present();
        if let Some(e) = entries.first() {
            e.grab_focus();
        }
    }

    fn open_id(&self) -> Option<String> {
        let id = self.open.borrow().id.clone();
        (!id.is_empty()).then_some(id)
    }

    fn new_conversation_dialog(self: &Rc<Self>) {
        self.entry_dialog(
            "New conversation",
            "One address makes a direct conversation; several (or a name) a group.",
            &[("Addresses", ""), ("Name (optional)", "")],
            "C_reate",
            false,
            |ui, v| {
                let members = addresses(&v[0]);
                if members.is_empty() {
                    ui.toast("Give at least one address");
                    return;
                }
                let name = v[1].trim().to_owned();
                let Some(client) = ui.client() else { return };
                let ui = ui.clone();
                let asked_at = ui.last_seq.get();
                glib::spawn_future_local(async move {
                    let name = (!name.is_empty()).then_some(name);
                    match client.create(&members, name.as_deref()).await {
                        Ok(c) => {
                            let id = c.id.clone();
                            ui.upsert_reply(c, asked_at);
                            ui.w.list.invalidate_sort();
                            ui.open_conversation(&id);
                            ui.w.compose.grab_focus();
                        }
                        Err(e) => ui.toast(&format!("Could not create the conversation: {e}")),
                    }
                });
            },
        );
    }

    fn rename_dialog(self: &Rc<Self>) {
        let Some(id) = self.open_id() else { return };
        let current = self
            .convs
            .borrow()
            .get(&id)
            .and_then(|e| e.conv.name.clone())
            .unwrap_or_default();
        self.entry_dialog(
            "Rename conversation",
            "Every member sees the new name.",
            &[("Name", &current)],
            "_Rename",
            false,
            move |ui, v| {
                let name = v[0].trim().to_owned();
                let (id, ui) = (id.clone(), ui.clone());
                let Some(client) = ui.client() else { return };
                glib::spawn_future_local(async move {
                    if let Err(e) = client.rename(&id, &name).await {
                        ui.toast(&format!("Could not rename: {e}"));
                    }
                });
            },
        );
    }

    fn members_dialog(self: &Rc<Self>, add: bool) {
        let Some(id) = self.open_id() else { return };
        let (heading, ok) = if add {
            ("Add members", "_Add")
        } else {
            ("Remove members", "Re_move")
        };
        self.entry_dialog(
            heading,
            "Addresses, separated by commas or spaces.",
            &[("Addresses", "")],
            ok,
            !add,
            move |ui, v| {
                let members = addresses(&v[0]);
                if members.is_empty() {
                    return;
                }
                let (id, ui) = (id.clone(), ui.clone());
                let Some(client) = ui.client() else { return };
                glib::spawn_future_local(async move {
                    if let Err(e) = client.change_members(add, &id, &members).await {
                        ui.toast(&format!("Could not change the members: {e}"));
                    }
                });
            },
        );
    }

    fn leave_dialog(self: &Rc<Self>) {
        let Some(id) = self.open_id() else { return };
        self.entry_dialog(
            "Leave this conversation?",
            "You will no longer receive its messages.",
            &[],
            "_Leave",
            true,
            move |ui, _| {
                let (id, ui) = (id.clone(), ui.clone());
                let Some(client) = ui.client() else { return };
                glib::spawn_future_local(async move {
                    if let Err(e) = client.leave(&id).await {
                        ui.toast(&format!("Could not leave: {e}"));
                    }
                });
            },
        );
    }

    /// The contact's safety number; "Verify" records that it matched in person.
    fn safety_dialog(self: &Rc<Self>, address: &str) {
        let Some(client) = self.client() else { return };
        let ui = self.clone();
        let address = address.to_owned();
        glib::spawn_future_local(async move {
            let r = match client.safety_number(&address).await {
                Ok(r) => r,
                Err(e) => {
                    ui.toast(&format!("No safety number for {address}: {e}"));
                    return;
                }
            };
            let number = r.str("safety_number").unwrap_or_default();
            let verified = client.verified(&address).await.unwrap_or(false);
            let body = format!(
                "Compare this number with {address}, in person or over a channel you trust.{}",
                if verified {
                    "\n\nAlready verified."
                } else {
                    ""
                }
            );
            let d = adw::MessageDialog::new(
                Some(&ui.w.window),
                Some(&format!("Safety number of {address}")),
                Some(&body),
            );
            let label = gtk::Label::builder()
                .label(&number)
                .selectable(true)
                .wrap(true)
                .justify(gtk::Justification::Center)
                .build();
            label.add_css_class("monospace");
            label.add_css_class("title-3");
            set_name(&label, &format!("Safety number {number}"));
            d.set_extra_child(Some(&label));
            d.add_response("close", "_Close");
            if !verified {
                d.add_response("verify", "_Verify");
                d.set_response_appearance("verify", adw::ResponseAppearance::Suggested);
            }
            d.set_close_response("close");
            let weak = Rc::downgrade(&ui);
            d.connect_response(None, move |_, resp| {
                if resp != "verify" {
                    return;
                }
                let Some(ui) = weak.upgrade() else { return };
                let (address, number) = (address.clone(), number.clone());
                let Some(client) = ui.client() else { return };
                glib::spawn_future_local(async move {
                    match client.verify(&address, &number).await {
                        Ok(_) => ui.toast(&format!("{address} is verified")),
                        Err(e) => ui.toast(&format!("Not verified: {e}")),
                    }
                });
            });
            d.present();
        });
    }

    /// No account on this daemon yet: create one (`CreateAccount`).
    fn first_run_dialog(self: &Rc<Self>) {
        self.set_online(true, "");
        self.entry_dialog(
            "Welcome to Sotto",
            "Create this device's account: a name, the relay that carries its messages and, \
             for an invite-only relay, the invite you were given.",
            &[
                ("Account name", ""),
                ("Relay", ""),
                ("Invite (optional)", ""),
            ],
            "C_reate account",
            false,
            |ui, v| {
                let (name, relay) = (v[0].trim().to_owned(), v[1].trim().to_owned());
                let invite = v[2].trim().to_owned();
                let Some(client) = ui.client() else { return };
                let ui = ui.clone();
                glib::spawn_future_local(async move {
                    let invite = (!invite.is_empty()).then_some(invite);
                    match client
                        .create_account(&name, &relay, invite.as_deref())
                        .await
                    {
                        Ok(_) => ui.initial_load(),
                        Err(e) => {
                            ui.toast(&format!("Could not create the account: {e}"));
                            ui.first_run_dialog();
                        }
                    }
                });
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_on_commas_and_spaces() {
        assert_eq!(
            addresses(" a@r, b@r\nc@r ,, "),
            vec!["a@r".to_owned(), "b@r".into(), "c@r".into()]
        );
        assert!(addresses(" , ").is_empty());
    }

    #[test]
    fn previews_are_one_short_line() {
        assert_eq!(one_line("a\n b\tc", 10), "a b c");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }

    #[test]
    fn times_are_local_and_sortable() {
        assert!(epoch_us("2026-01-02T00:00:00Z") > epoch_us("2026-01-01T23:59:59.5Z"));
        assert_eq!(epoch_us("not a time"), 0);
        assert_eq!(hhmm("garbage"), "");
        assert_eq!(hhmm("2026-01-01T10:05:00Z").len(), 5);
    }
}
