//! Drawing a snapshot of the [`App`]: the conversation list on the left, the open
//! conversation's history and the input line on the right, a status line at the bottom,
//! and the help or search box over them. Pure: the same app draws the same screen.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, List, ListItem, ListState, Paragraph};
use sotto_protocol::api::{Message, MessageState};
use unicode_segmentation::UnicodeSegmentation as _;

use super::app::{App, Focus, History, Overlay, Search};
use super::text;

/// The most rows the input box grows to (without its border).
const INPUT_MAX_ROWS: usize = 5;

/// Every key, for the help overlay and docs/chat.md.
pub const KEYS: &[(&str, &str)] = &[
    ("Up/Down, Ctrl-p/Ctrl-n", "move in the conversation list"),
    ("Enter (list)", "open the highlighted conversation"),
    ("Tab", "switch between the list and the input line"),
    (
        "PageUp/PageDown, wheel",
        "scroll the history (older pages load)",
    ),
    ("Up/Down (input)", "scroll the history by a line"),
    ("Enter (input)", "send the message"),
    ("Alt-Enter, Ctrl-j", "insert a newline"),
    ("Ctrl-e", "compose in $EDITOR"),
    ("Ctrl-u, Home/End", "clear to the start, move the cursor"),
    ("/ (list), Ctrl-f", "search all messages; Enter jumps"),
    ("? (list), F1", "this help"),
    ("Esc", "back: close a box, leave the input"),
    ("Ctrl-c", "quit"),
];

/// The columns of the conversation list.
pub fn list_width(size: (u16, u16)) -> u16 {
    let cols = size.0;
    if cols < 60 {
        cols / 3
    } else {
        (cols / 4).clamp(24, 40)
    }
}

struct Areas {
    list: Rect,
    header: Rect,
    history: Rect,
    input: Rect,
    status: Rect,
}

fn areas(app: &App) -> Areas {
    let full = Rect::new(0, 0, app.size.0, app.size.1);
    let [main, status] = Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(full);
    let [list, right] =
        Layout::horizontal([Constraint::Length(list_width(app.size)), Constraint::Min(1)])
            .areas(main);
    let inner = right.width.saturating_sub(2) as usize;
    let rows = input_lines(&app.input.text, app.input.cursor, inner)
        .0
        .len()
        .clamp(1, INPUT_MAX_ROWS) as u16;
    let [header, history, input] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(rows + 2),
    ])
    .areas(right);
    // One column between the list's border and the history.
    let history = Rect {
        x: history.x + 1,
        width: history.width.saturating_sub(1),
        ..history
    };
    Areas {
        list,
        header,
        history,
        input,
        status,
    }
}

/// Rows of history on screen.
pub fn history_height(app: &App) -> usize {
    areas(app).history.height as usize
}

/// Columns of history on screen.
pub fn history_width(app: &App) -> usize {
    areas(app).history.width as usize
}

/// Draws the whole screen.
pub fn render(frame: &mut Frame, app: &App) {
    let a = areas(app);
    render_list(frame, app, a.list);
    render_header(frame, app, a.header);
    render_history(frame, app, a.history);
    render_input(frame, app, a.input);
    render_status(frame, app, a.status);
    match &app.overlay {
        Overlay::None => {}
        Overlay::Help => render_help(frame, frame.area()),
        Overlay::Search(s) => render_search(frame, app, s, frame.area()),
    }
}

fn local(tz: &TimeZone, rfc3339: &str, fmt: &str) -> String {
    match rfc3339.parse::<Timestamp>() {
        Ok(t) => t.to_zoned(tz.clone()).strftime(fmt).to_string(),
        Err(_) => String::new(),
    }
}

fn day(tz: &TimeZone, rfc3339: &str) -> String {
    local(tz, rfc3339, "%a %-d %b %Y")
}

fn render_list(frame: &mut Frame, app: &App, area: Rect) {
    let focused = app.focus == Focus::List && app.overlay == Overlay::None;
    let block = Block::new()
        .borders(Borders::RIGHT)
        .title(Line::from(" conversations ").style(if focused {
            Style::new().add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        }));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if app.conversations.is_empty() {
        let text = if app.list_loaded {
            "no conversations yet:\nsotto conversation create ADDRESS"
        } else {
            "loading…"
        };
        frame.render_widget(
            Paragraph::new(text).style(Style::new().fg(Color::DarkGray)),
            inner,
        );
        return;
    }
    let cols = inner.width as usize;
    let open = app.open.as_ref().map(|h| h.conversation.as_str());
    let items: Vec<ListItem> = app
        .conversations
        .iter()
        .map(|c| {
            let mark = if Some(c.id()) == open { "▸" } else { " " };
            let count = match c.unread {
                Some(n) if n > 0 => format!(" {n}"),
                _ => String::new(),
            };
            let title_cols = cols.saturating_sub(1 + text::width(&count));
            let title = text::truncate(&text::one_line(&c.title(app.me.as_deref())), title_cols);
            let pad = cols.saturating_sub(1 + text::width(&title) + text::width(&count));
            let mut first = vec![
                Span::raw(mark),
                Span::styled(title, Style::new().add_modifier(Modifier::BOLD)),
                Span::raw(" ".repeat(pad)),
            ];
            if !count.is_empty() {
                first.push(Span::styled(
                    count,
                    Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
                ));
            }
            let preview = match &c.last_message {
                Some(m) => {
                    let who = if Some(m.sender.to_string().as_str()) == app.me.as_deref() {
                        "you: ".to_owned()
                    } else if c.conv.members.len() > 2 {
                        format!("{}: ", m.sender.name())
                    } else {
                        String::new()
                    };
                    format!("{who}{}", text::one_line(&m.text))
                }
                None => state_word(c).to_owned(),
            };
            let second = Line::styled(
                format!(" {}", text::truncate(&preview, cols.saturating_sub(1))),
                Style::new().fg(Color::DarkGray),
            );
            ListItem::new(vec![Line::from(first), second])
        })
        .collect();
    let highlight = if focused {
        Style::new().add_modifier(Modifier::REVERSED)
    } else {
        Style::new().bg(Color::DarkGray)
    };
    let list = List::new(items).highlight_style(highlight);
    let mut state = ListState::default().with_selected(Some(app.selected));
    frame.render_stateful_widget(list, inner, &mut state);
}

fn state_word(c: &super::model::ConvView) -> &'static str {
    use sotto_protocol::api::ConversationState as S;
    match c.conv.state {
        S::Pending => "(being created)",
        S::Left => "(left)",
        S::Removed => "(removed)",
        S::Broken => "(broken)",
        _ => "",
    }
}

fn render_header(frame: &mut Frame, app: &App, area: Rect) {
    let line = match app.open_conv() {
        Some(c) => {
            let mut spans = vec![Span::styled(
                format!(" {}", text::one_line(&c.title(app.me.as_deref()))),
                Style::new().add_modifier(Modifier::BOLD),
            )];
            if c.conv.members.len() > 2 {
                spans.push(Span::styled(
                    format!("  {} members", c.conv.members.len()),
                    Style::new().fg(Color::DarkGray),
                ));
            }
            let state = match (&c.conv.state, &c.conv.state_reason) {
                // The daemon's readable reason, as `sotto conversation show` prints it.
                (sotto_protocol::api::ConversationState::Broken, Some(reason)) => {
                    format!("(broken: {})", text::one_line(reason))
                }
                _ => state_word(c).to_owned(),
            };
            if !state.is_empty() {
                spans.push(Span::styled(
                    format!("  {state}"),
                    Style::new().fg(Color::Red),
                ));
            }
            Line::from(spans)
        }
        None if app.open.is_some() => Line::raw(" …"),
        None => Line::styled(
            " pick a conversation and press Enter",
            Style::new().fg(Color::DarkGray),
        ),
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The newest lines of a history: at least `need` of them (whole message blocks) unless
/// the loaded history is shorter, oldest first. `complete` when it reached the top (the
/// header line included), so `lines.len()` is then the history's whole height. Built from
/// the newest message backward: a long loaded history costs only what is on screen.
#[derive(Debug)]
pub struct Tail {
    /// The lines, oldest first.
    pub lines: Vec<Line<'static>>,
    /// Everything loaded is in `lines`.
    pub complete: bool,
}

/// See [`Tail`].
pub fn history_tail(app: &App, h: &History, width: usize, need: usize) -> Tail {
    let dim = Style::new().fg(Color::DarkGray);
    if !h.loaded {
        return Tail {
            lines: vec![Line::styled(" loading…", dim)],
            complete: true,
        };
    }
    let shown: Vec<&Message> = h.messages.iter().filter(|m| m.kind == "text").collect();
    let mut blocks: Vec<Vec<Line<'static>>> = Vec::new();
    let mut count = 0;
    let mut i = shown.len();
    while i > 0 && count < need {
        i -= 1;
        let b = block(app, h, &shown, i, width);
        count += b.len();
        blocks.push(b);
    }
    let complete = i == 0;
    let mut lines = Vec::with_capacity(count + 2);
    if complete {
        if h.loading_older {
            lines.push(Line::styled(" loading older messages…", dim));
        } else if h.at_start {
            lines.push(Line::styled(" — the beginning of this conversation —", dim));
        }
        if shown.is_empty() {
            lines.push(Line::styled(
                " no messages yet: type below, Enter sends",
                dim,
            ));
        }
    }
    for b in blocks.into_iter().rev() {
        lines.extend(b);
    }
    Tail { lines, complete }
}

/// How many lines the messages after `shown_idx` (an index into the text messages) take.
pub fn history_lines_after(app: &App, h: &History, width: usize, idx: usize) -> usize {
    let shown: Vec<&Message> = h.messages.iter().filter(|m| m.kind == "text").collect();
    (idx + 1..shown.len())
        .map(|i| block(app, h, &shown, i, width).len())
        .sum()
}

/// The lines of message `i`: a day separator when its day differs from the one before,
/// the header, the wrapped text.
fn block(app: &App, h: &History, shown: &[&Message], i: usize, width: usize) -> Vec<Line<'static>> {
    let dim = Style::new().fg(Color::DarkGray);
    let m = shown[i];
    let mut out = Vec::new();
    let d = day(&app.tz, &m.sent_at);
    if i == 0 || day(&app.tz, &shown[i - 1].sent_at) != d {
        let label = format!(" {d} ");
        let side = width.saturating_sub(text::width(&label)) / 2;
        out.push(Line::styled(
            format!("{}{label}{}", "─".repeat(side), "─".repeat(side)),
            dim,
        ));
    }
    message_lines(
        app,
        m,
        width,
        h.highlight.as_deref() == Some(&m.id),
        &mut out,
    );
    out
}

fn message_lines(
    app: &App,
    m: &Message,
    width: usize,
    highlight: bool,
    out: &mut Vec<Line<'static>>,
) {
    let mine = Some(m.sender.to_string().as_str()) == app.me.as_deref();
    let time = local(&app.tz, &m.sent_at, "%H:%M");
    let mut header = vec![
        Span::styled(format!("{time} "), Style::new().fg(Color::DarkGray)),
        if mine {
            Span::styled(
                "you",
                Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
            )
        } else {
            Span::styled(
                text::one_line(&m.sender.to_string()),
                Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            )
        },
    ];
    match m.state {
        MessageState::Queued => {
            header.push(Span::styled(" · queued", Style::new().fg(Color::Yellow)))
        }
        MessageState::Sent => {
            header.push(Span::styled(" · sent", Style::new().fg(Color::DarkGray)))
        }
        MessageState::Failed => {
            let why = m
                .error
                .as_ref()
                .map(|e| e.message.as_str())
                .unwrap_or("unknown error");
            header.push(Span::styled(
                format!(" · failed: {}", text::one_line(why)),
                Style::new().fg(Color::Red),
            ))
        }
        _ => {}
    }
    out.push(Line::from(header));
    let body_style = if highlight {
        Style::new().bg(Color::Yellow).fg(Color::Black)
    } else {
        Style::new()
    };
    for line in text::wrap(&text::sanitize(&m.text), width.saturating_sub(2)) {
        out.push(Line::from(vec![
            Span::raw("  "),
            Span::styled(line, body_style),
        ]));
    }
}

fn render_history(frame: &mut Frame, app: &App, area: Rect) {
    let Some(h) = &app.open else {
        return;
    };
    let height = area.height as usize;
    let lines = history_tail(app, h, area.width as usize, h.scroll + height).lines;
    let end = lines.len().saturating_sub(h.scroll);
    let start = end.saturating_sub(height);
    let shown: Vec<Line> = lines[start..end].to_vec();
    // Short histories sit at the bottom, next to the input line.
    let pad = height.saturating_sub(shown.len()) as u16;
    let target = Rect {
        y: area.y + pad,
        height: area.height - pad,
        ..area
    };
    frame.render_widget(Paragraph::new(shown), target);
    if h.scroll > 0 {
        let note = format!(" ↓ {} more lines ", h.scroll);
        let w = text::width(&note) as u16;
        if w < area.width {
            let r = Rect::new(
                area.x + area.width - w,
                area.y + area.height.saturating_sub(1),
                w,
                1,
            );
            frame.render_widget(
                Paragraph::new(note).style(Style::new().fg(Color::Black).bg(Color::Yellow)),
                r,
            );
        }
    }
}

/// The input text split into screen rows of `width` columns, and the cursor's (row, col).
pub fn input_lines(text: &str, cursor: usize, width: usize) -> (Vec<String>, (usize, usize)) {
    let width = width.max(1);
    let mut rows = vec![String::new()];
    let mut col = 0;
    let mut pos = (0, 0);
    let mut seen = 0;
    for g in text.graphemes(true) {
        if seen == cursor {
            pos = (rows.len() - 1, col);
        }
        seen += g.len();
        if g == "\n" || g == "\r\n" {
            rows.push(String::new());
            col = 0;
            continue;
        }
        let shown = text::sanitize(g);
        let w = text::width(&shown);
        if col + w > width {
            rows.push(String::new());
            col = 0;
        }
        if let Some(last) = rows.last_mut() {
            last.push_str(&shown);
        }
        col += w;
    }
    if seen <= cursor {
        if col >= width {
            rows.push(String::new());
            col = 0;
        }
        pos = (rows.len() - 1, col);
    }
    (rows, pos)
}

fn render_input(frame: &mut Frame, app: &App, area: Rect) {
    let focused = app.focus == Focus::Input && app.overlay == Overlay::None;
    let title = match app.open_conv() {
        Some(c) => format!(" to {} ", text::truncate(&c.title(app.me.as_deref()), 40)),
        None => " message ".to_owned(),
    };
    let border = if focused {
        Style::new().fg(Color::Cyan)
    } else {
        Style::new().fg(Color::DarkGray)
    };
    let block = Block::bordered().border_style(border).title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let (rows, (crow, ccol)) = input_lines(&app.input.text, app.input.cursor, inner.width as usize);
    let visible = inner.height as usize;
    let first = (crow + 1).saturating_sub(visible);
    let shown: Vec<Line> = rows
        .iter()
        .skip(first)
        .take(visible)
        .map(|r| Line::raw(r.clone()))
        .collect();
    if shown.iter().all(|l| l.width() == 0) && !focused {
        let hint = if app.open.is_some() {
            "Tab to type"
        } else {
            "open a conversation to type"
        };
        frame.render_widget(
            Paragraph::new(hint).style(Style::new().fg(Color::DarkGray)),
            inner,
        );
    } else {
        frame.render_widget(Paragraph::new(shown), inner);
    }
    if focused {
        frame.set_cursor_position(Position::new(
            inner.x + ccol as u16,
            inner.y + (crow - first) as u16,
        ));
    }
}

fn render_status(frame: &mut Frame, app: &App, area: Rect) {
    let me = app.me.clone().unwrap_or_else(|| "no account".to_owned());
    let relay = if app.relays.is_empty() {
        Span::styled("relay: —", Style::new().fg(Color::DarkGray))
    } else if app.relays.iter().all(|r| r.connected) {
        Span::styled("relay: connected", Style::new().fg(Color::Green))
    } else {
        Span::styled("relay: offline", Style::new().fg(Color::Red))
    };
    let daemon = if app.daemon_up {
        Span::styled("daemon: ok", Style::new().fg(Color::Green))
    } else if app.daemon_error.is_some() {
        Span::styled(
            "daemon: unreachable, reconnecting",
            Style::new().fg(Color::White).bg(Color::Red),
        )
    } else {
        Span::styled("daemon: connecting", Style::new().fg(Color::Yellow))
    };
    let left = vec![
        Span::raw(format!(" {me} │ ")),
        relay,
        Span::raw(" │ "),
        daemon,
    ];
    let left_w: usize = left.iter().map(|s| s.width()).sum();
    let right = match &app.notice {
        Some(n) => text::one_line(n),
        None => "?/F1 help · Ctrl-c quit".to_owned(),
    };
    let room = (area.width as usize).saturating_sub(left_w + 2);
    let right = text::truncate(&right, room);
    let pad = room.saturating_sub(text::width(&right));
    let mut spans = left;
    spans.push(Span::raw(" ".repeat(pad + 1)));
    spans.push(Span::styled(
        right,
        if app.notice.is_some() {
            Style::new().fg(Color::Yellow)
        } else {
            Style::new().fg(Color::DarkGray)
        },
    ));
    frame.render_widget(
        Paragraph::new(Line::from(spans)).style(Style::new().bg(Color::Black)),
        area,
    );
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn render_help(frame: &mut Frame, area: Rect) {
    let key_w = KEYS.iter().map(|(k, _)| text::width(k)).max().unwrap_or(0);
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(
                    format!(" {k:<key_w$}  "),
                    Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    let width = lines.iter().map(Line::width).max().unwrap_or(0) as u16 + 3;
    let r = centered(area, width, KEYS.len() as u16 + 2);
    frame.render_widget(Clear, r);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" keys (any key closes) ")),
        r,
    );
}

fn render_search(frame: &mut Frame, app: &App, s: &Search, area: Rect) {
    let r = centered(
        area,
        area.width.saturating_mul(4) / 5,
        area.height.saturating_mul(3) / 5,
    );
    frame.render_widget(Clear, r);
    let block = Block::bordered().title(" search (Enter: search, then Enter: jump · Esc: close) ");
    let inner = block.inner(r);
    frame.render_widget(block, r);
    let [query_area, results_area] =
        Layout::vertical([Constraint::Length(2), Constraint::Min(0)]).areas(inner);
    let q = format!(" / {}", text::one_line(&s.query));
    frame.render_widget(Paragraph::new(q.clone()), query_area);
    frame.set_cursor_position(Position::new(
        (query_area.x + text::width(&q) as u16).min(query_area.right().saturating_sub(1)),
        query_area.y,
    ));
    let dim = Style::new().fg(Color::DarkGray);
    if s.pending {
        frame.render_widget(Paragraph::new(" searching…").style(dim), results_area);
        return;
    }
    if let Some(e) = &s.error {
        frame.render_widget(Paragraph::new(format!(" {e}")).style(dim), results_area);
        return;
    }
    let cols = results_area.width as usize;
    let items: Vec<ListItem> = s
        .results
        .iter()
        .map(|hit| {
            let m = &hit.message;
            let conv = app
                .conversations
                .iter()
                .find(|c| c.conv.id == m.conversation)
                .map(|c| c.title(app.me.as_deref()))
                .unwrap_or_else(|| m.conversation.chars().take(8).collect());
            let when = local(&app.tz, &m.sent_at, "%Y-%m-%d %H:%M");
            let body = hit.snippet.as_deref().unwrap_or(&m.text);
            let line = format!(
                " {} · {when} · {}: {}",
                text::one_line(&conv),
                m.sender.name(),
                text::one_line(body)
            );
            ListItem::new(text::truncate(&line, cols))
        })
        .collect();
    let list = List::new(items).highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = ListState::default().with_selected(Some(s.selected));
    frame.render_stateful_widget(list, results_area, &mut state);
}
