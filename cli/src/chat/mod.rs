//! `sotto chat`: a full-screen terminal messenger over the daemon's socket.
//!
//! [`app::App`] holds the state and reacts to keys and daemon events, [`ui`] draws it,
//! [`net`] talks to the daemon on two threads, [`term`] owns the terminal. The chat keeps no
//! state of its own beyond what is on screen: read markers, unread counts, order and search
//! are the daemon's.

pub mod app;
pub mod model;
pub mod net;
pub mod term;
pub mod text;
pub mod ui;

#[cfg(test)]
mod tests;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use jiff::tz::TimeZone;
use ratatui::crossterm::event::{self, Event, KeyEventKind};

use app::{App, NetEvent};

/// How long the loop waits for a key before looking at the daemon's news again.
const TICK: Duration = Duration::from_millis(25);

/// Runs the chat until the user quits (Ctrl-c) or a signal ends it.
pub fn run(socket: PathBuf, open: Option<String>) -> anyhow::Result<()> {
    anyhow::ensure!(
        std::io::stdout().is_terminal() && std::io::stdin().is_terminal(),
        "sotto chat needs a terminal (stdin and stdout); for scripts use `sotto messages`, `sotto send` and `sotto listen`"
    );
    term::exit_on_signals().context("installing signal handlers")?;
    let (tx, rx) = std::sync::mpsc::channel::<NetEvent>();
    let requests = net::start(socket, tx);
    let tz = TimeZone::try_system().unwrap_or(TimeZone::UTC);
    let mut app = App::new(tz, open);
    let (mut terminal, _guard) = term::setup().context("setting up the terminal")?;
    let mut dirty = true;
    loop {
        while let Ok(ev) = rx.try_recv() {
            app.on_net(ev);
            dirty = true;
        }
        for r in app.outbox.drain(..) {
            // The calls thread only ends with the process.
            let _ = requests.send(r);
        }
        if app.quit {
            return Ok(());
        }
        if app.want_editor {
            app.want_editor = false;
            match term::edit(&mut terminal, &app.input.text) {
                Ok(text) => app.input.set(text),
                Err(e) => app.notice = Some(format!("{e:#}")),
            }
            dirty = true;
        }
        if dirty {
            let size = terminal.size()?;
            if (size.width, size.height) != app.size {
                app.on_resize(size.width, size.height);
            }
            let _held = term::SCREEN.lock();
            terminal.draw(|frame| ui::render(frame, &app))?;
            dirty = false;
        }
        if event::poll(TICK)? {
            // Take everything that is waiting before drawing again.
            loop {
                match event::read()? {
                    Event::Key(k) if k.kind != KeyEventKind::Release => app.on_key(k),
                    Event::Mouse(m) => app.on_mouse(m),
                    Event::Paste(p) => app.on_paste(&p),
                    Event::Resize(w, h) => app.on_resize(w, h),
                    _ => {}
                }
                if !event::poll(Duration::ZERO)? {
                    break;
                }
            }
            dirty = true;
        }
    }
}
