//! The terminal: raw mode and the alternate screen on the way in, and always back out — on
//! a normal exit, an error, a panic, SIGTERM, SIGHUP or SIGINT — and around `$EDITOR`.

use std::io::{self, Stdout, Write as _};
use std::sync::Mutex;

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};

/// The terminal the chat draws on.
pub type Tty = Terminal<CrosstermBackend<Stdout>>;

/// Raw mode, alternate screen, mouse and bracketed paste on.
fn enter() -> io::Result<()> {
    enable_raw_mode()?;
    execute!(
        io::stdout(),
        EnterAlternateScreen,
        EnableMouseCapture,
        EnableBracketedPaste
    )
}

/// Everything `enter` turned on, off again. Errors are ignored: on SIGHUP the terminal may
/// be gone, and there is nothing left to restore then.
pub fn restore() {
    let _ = execute!(
        io::stdout(),
        DisableBracketedPaste,
        DisableMouseCapture,
        LeaveAlternateScreen,
        ratatui::crossterm::cursor::Show
    );
    let _ = disable_raw_mode();
    let _ = io::stdout().flush();
}

/// Restores the terminal when dropped, whichever way `run` returns.
#[derive(Debug)]
pub struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

/// Takes the terminal over; the returned guard gives it back. A panic (on any thread)
/// restores the terminal before its message is printed, so the message is readable and the
/// shell usable, and ends the chat: a half-working screen would only mislead.
pub fn setup() -> io::Result<(Tty, Guard)> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
        std::process::exit(101);
    }));
    enter()?;
    let guard = Guard;
    let terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    Ok((terminal, guard))
}

/// Held while the screen is drawn or handed to `$EDITOR`, so that a signal's restore never
/// lands in the middle of a frame.
pub static SCREEN: Mutex<()> = Mutex::new(());

/// On SIGTERM, SIGHUP or SIGINT: restore the terminal and exit (status 0: an orderly quit).
/// A thread of its own, not a flag the main loop checks: when the terminal hangs up,
/// crossterm's `poll` can spin on the dead tty and never return to look at a flag.
pub fn exit_on_signals() -> io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGINT,
    ])?;
    std::thread::Builder::new()
        .name("sotto-chat-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                let _held = SCREEN.lock();
                restore();
                std::process::exit(0);
            }
        })?;
    Ok(())
}

/// Runs `$VISUAL` or `$EDITOR` (else `vi`) on `draft` and returns the edited text. The
/// terminal is handed to the editor and taken back afterwards. The draft file lives in
/// `$XDG_RUNTIME_DIR` when there is one (memory, 0700) and is deleted afterwards.
pub fn edit(terminal: &mut Tty, draft: &str) -> anyhow::Result<String> {
    let editor = std::env::var("VISUAL")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .or_else(|| {
            std::env::var("EDITOR")
                .ok()
                .filter(|e| !e.trim().is_empty())
        })
        .unwrap_or_else(|| "vi".to_owned());
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let mut file = tempfile::Builder::new()
        .prefix("sotto-draft-")
        .suffix(".txt")
        .tempfile_in(dir)?;
    file.write_all(draft.as_bytes())?;
    file.flush()?;
    let _held = SCREEN.lock();
    restore();
    // `sh -c` so that EDITOR may carry arguments (`code --wait`, `emacs -nw`).
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(file.path())
        .status();
    enter()?;
    terminal.clear()?;
    let status = status?;
    anyhow::ensure!(
        status.success(),
        "{editor} exited with {status}; draft kept"
    );
    let text = std::fs::read_to_string(file.path())?;
    Ok(text.strip_suffix('\n').unwrap_or(&text).to_owned())
}
