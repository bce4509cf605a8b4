//! `sotto chat` end to end: the real binary in a real terminal (tmux, 160×45, on a private
//! tmux socket) against real daemons and a relay, driven with `send-keys` and read with
//! `capture-pane`. Every wait polls the screen until a deadline; nothing sleeps.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::json;
use tempfile::TempDir;

use crate::support::{Daemon, Relay, bin};

/// Screens change within milliseconds; this only bounds a hung test on a loaded machine.
const SCREEN_DEADLINE: Duration = Duration::from_secs(60);
/// The conversation list's width at 160 columns (ui::list_width): history starts after it.
const LIST_COLS: usize = 40;

/// A tmux server on its own socket, one 160×45 session running `sh`, killed on drop.
struct Tmux {
    dir: TempDir,
}

impl Tmux {
    /// A shell in a fresh tmux session with `daemon`'s environment.
    fn start(daemon: &Daemon) -> Tmux {
        let dir = tempfile::Builder::new()
            .prefix("sotto-tmux")
            .tempdir()
            .expect("tempdir");
        let t = Tmux { dir };
        let mut cmd = t.command();
        for (k, v) in &daemon.env {
            cmd.env(k, v);
        }
        cmd.env("SHELL", "/bin/sh")
            .env("TERM", "xterm-256color")
            .env("PS1", "$ ")
            .env("ENV", "/dev/null");
        let out = cmd
            .args([
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "160",
                "-y",
                "45",
                "/bin/sh",
            ])
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.wait_screen("the shell prompt", |s| s.contains('$'));
        t
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("tmux.sock")
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("tmux");
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("-S")
            .arg(self.socket())
            .args(["-f", "/dev/null"]);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.command().args(args).output().expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Key names as tmux knows them (`Enter`, `C-c`, `Down`).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Text typed as it is.
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "t", "-l", text]);
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }

    fn format(&self, fmt: &str) -> String {
        String::from_utf8_lossy(&self.run(&["display-message", "-p", "-t", "t", fmt]).stdout)
            .trim()
            .to_owned()
    }

    /// The pid of the process named `name` running in the pane (at any depth).
    fn find_process(&self, name: &str) -> String {
        let mut todo = vec![self.format("#{pane_pid}")];
        while let Some(pid) = todo.pop() {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == name {
                return pid;
            }
            let out = Command::new("pgrep")
                .args(["-P", &pid])
                .output()
                .expect("pgrep");
            todo.extend(
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_owned),
            );
        }
        panic!("no {name} under the pane; the screen:\n{}", self.screen());
    }

    /// Polls the screen until `pred` holds; panics with the last screen after the deadline.
    fn wait_screen(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                start.elapsed() < SCREEN_DEADLINE,
                "timed out waiting for {what}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").output();
    }
}

/// The history pane (right of the list) of a captured screen.
fn history_pane(screen: &str) -> String {
    screen
        .lines()
        .map(|l| l.chars().skip(LIST_COLS + 1).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The list pane of a captured screen.
fn list_pane(screen: &str) -> String {
    screen
        .lines()
        .map(|l| l.chars().take(LIST_COLS).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The unread count the list shows beside "plans", if any.
fn plans_unread(screen: &str) -> Option<u64> {
    list_pane(screen)
        .lines()
        .find(|l| l.trim_start_matches([' ', '▸']).starts_with("plans"))
        .and_then(|l| l.trim_end_matches('│').split_whitespace().last())
        .and_then(|n| n.parse().ok())
}

/// Alice and Bob on one relay with a direct conversation and a group "plans"; the direct one
/// has the newest activity.
struct Pair {
    relay: Relay,
    alice: Daemon,
    bob: Daemon,
    bob_addr: String,
    direct: String,
    plans: String,
}

fn pair() -> Pair {
    let relay = Relay::start();
    let mut alice = Daemon::new("file");
    alice.account(&relay, "alice");
    let mut bob = Daemon::new("file");
    let bob_addr = bob.account(&relay, "bob");
    let plans = alice.sotto_json(&["conversation", "create", "--name", "plans", &bob_addr]);
    let plans = plans["id"].as_str().expect("id").to_owned();
    bob.wait_conversation("plans at bob", |c| c["id"] == plans.as_str());
    let direct = alice.sotto_json(&["conversation", "create", &bob_addr]);
    let direct = direct["id"].as_str().expect("id").to_owned();
    bob.wait_conversation("the direct one at bob", |c| c["id"] == direct.as_str());
    alice.sotto_ok(&["send", &direct, "hello from alice before the chat"]);
    bob.wait_messages(&direct, "alice's first", |l| l.len() == 1);
    bob.sotto_ok(&["send", &direct, "first reply from bob"]);
    alice.wait_messages(&direct, "bob's reply", |l| l.len() == 2);
    Pair {
        relay,
        alice,
        bob,
        bob_addr,
        direct,
        plans,
    }
}

fn start_chat(t: &Tmux, alice: &Daemon, args: &str) {
    let sotto = bin("sotto");
    t.type_text(&format!(
        "{} --socket {} chat {args}; echo chat-exited-$?",
        sotto.display(),
        alice.socket().display()
    ));
    t.keys(&["Enter"]);
}

#[test]
fn chat_lists_opens_sends_receives_survives_a_restart_and_exits_cleanly() {
    let mut p = pair();
    let t = Tmux::start(&p.alice);
    start_chat(&t, &p.alice, "");
    let s = t.wait_screen("the list", |s| {
        s.contains("plans") && s.contains(&p.bob_addr) && s.contains("daemon: ok")
    });
    assert!(s.contains("relay: connected"), "{s}");
    assert_eq!(
        t.format("#{alternate_on}"),
        "1",
        "the chat draws on the alternate screen"
    );
    // Both were created within the same second: whichever is first, move to the direct one.
    let l = list_pane(&s);
    if l.find("plans") < l.find(&p.bob_addr) {
        t.keys(&["Down"]);
    }
    t.keys(&["Enter"]);
    let s = t.wait_screen("the history", |s| {
        let h = history_pane(s);
        h.contains("hello from alice before the chat") && h.contains("first reply from bob")
    });
    let h = history_pane(&s);
    assert!(
        h.find("hello from alice") < h.find("first reply from bob"),
        "oldest first:\n{s}"
    );
    assert!(
        h.contains("you · sent"),
        "own messages show their state:\n{s}"
    );

    // Typed text + Enter reaches the other daemon.
    t.type_text("typed in the chat ✓ 日本");
    t.keys(&["Enter"]);
    let got = p
        .bob
        .wait_messages(&p.direct, "the typed message at bob", |l| l.len() == 3);
    assert_eq!(got[2]["text"], "typed in the chat ✓ 日本");
    t.wait_screen("the sent message", |s| {
        history_pane(s).contains("typed in the chat")
    });

    // A message from the other side appears without a keypress.
    p.bob.sotto_ok(&["send", &p.direct, "live from bob"]);
    t.wait_screen("bob's live message", |s| {
        history_pane(s).contains("live from bob")
    });

    // A message in another conversation moves it to the top of the list with its preview.
    p.bob.sotto_ok(&["send", &p.plans, "news in plans"]);
    let s = t.wait_screen("plans moving up", |s| {
        let l = list_pane(s);
        l.contains("news in plans")
            && l.find("plans").unwrap_or(usize::MAX) < l.find(&p.bob_addr).unwrap_or(0)
    });
    assert!(
        history_pane(&s).contains("live from bob"),
        "the open conversation stays open:\n{s}"
    );
    // ...with the daemon's unread count; the open one, its newest message on screen, has
    // none (the chat marked it read).
    assert_eq!(plans_unread(&s), Some(1), "plans counts one unread:\n{s}");
    let daemon_view = p.alice.sotto_json(&["conversation", "list"]);
    let unread = |id: &str| {
        daemon_view
            .as_array()
            .and_then(|l| l.iter().find(|c| c["id"] == id))
            .map(|c| c["unread"].clone())
    };
    assert_eq!(unread(&p.plans), Some(json!(1)), "{daemon_view}");
    assert_eq!(unread(&p.direct), Some(json!(0)), "{daemon_view}");
    // Opening plans shows the news and marks it read: the count goes, here and at the daemon.
    t.keys(&["Escape"]);
    t.wait_screen("the list focused", |s| s.contains("Tab to type"));
    t.keys(&["Home", "Enter"]);
    let s = t.wait_screen("plans read", |s| {
        history_pane(s).contains("news in plans") && plans_unread(s).is_none()
    });
    assert!(s.contains("daemon: ok"), "{s}");
    p.alice
        .wait_conversation("plans marked read at the daemon", |c| {
            c["id"] == p.plans.as_str() && c["unread"] == 0
        });

    // `/` searches every conversation; Enter jumps to the hit in its conversation.
    t.keys(&["Escape"]);
    t.wait_screen("the list focused", |s| s.contains("Tab to type"));
    t.type_text("/");
    t.wait_screen("the search box", |s| s.contains("search (Enter"));
    t.type_text("before the");
    t.keys(&["Enter"]);
    t.wait_screen("a hit", |s| s.contains("[before]") || s.contains("[the]"));
    t.keys(&["Enter"]);
    let s = t.wait_screen("the jump", |s| {
        !s.contains("search (Enter") && history_pane(s).contains("hello from alice before the chat")
    });
    assert!(
        s.lines().next().is_some_and(|l| l.contains(&p.bob_addr)),
        "the direct conversation is open:\n{s}"
    );

    // The daemon restarts; what was sent meanwhile shows once the chat has reconnected.
    p.alice.stop();
    t.wait_screen("the daemon reported gone", |s| {
        s.contains("daemon: unreachable")
    });
    p.bob
        .sotto_ok(&["send", &p.direct, "sent while you were away"]);
    p.alice.start();
    let s = t.wait_screen("the message sent meanwhile", |s| {
        s.contains("daemon: ok") && history_pane(s).contains("sent while you were away")
    });
    let h = history_pane(&s);
    assert_eq!(
        h.matches("sent while you were away").count(),
        1,
        "exactly once:\n{s}"
    );
    for text in ["live from bob", "typed in the chat", "first reply from bob"] {
        assert_eq!(h.matches(text).count(), 1, "{text} exactly once:\n{s}");
    }

    // Ctrl-c leaves a usable terminal: the normal screen, cooked mode with echo.
    t.keys(&["C-c"]);
    t.wait_screen("the chat's exit", |s| s.contains("chat-exited-0"));
    assert_eq!(t.format("#{alternate_on}"), "0");
    t.type_text("stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo -e -icanon -e -echo | tr '\\n' ' '; echo end-of-stty");
    t.keys(&["Enter"]);
    let s = t.wait_screen("stty's answer", |s| {
        s.contains("echo end-of-stty") && s.matches("end-of-stty").count() >= 2
    });
    assert!(
        s.contains("icanon echo end-of-stty"),
        "cooked mode with echo:\n{s}"
    );
    drop(p.relay);
}

#[test]
fn chat_conv_opens_it_in_the_input_and_composes_in_the_editor() {
    let p = pair();
    let editor = p.alice.root.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nprintf 'line one from the editor\\nline two' > \"$1\"\n",
    )
    .expect("write editor");
    let t = Tmux::start(&p.alice);
    t.type_text(&format!("export EDITOR='sh {}'", editor.display()));
    t.keys(&["Enter"]);
    start_chat(&t, &p.alice, &p.bob_addr);
    t.wait_screen("the conversation open", |s| {
        history_pane(s).contains("first reply from bob")
    });
    // The cursor is in the input line: typing goes there, Enter sends.
    t.type_text("straight to the input");
    t.keys(&["Enter"]);
    p.bob.wait_messages(&p.direct, "the message at bob", |l| {
        l.iter().any(|m| m["text"] == "straight to the input")
    });
    // Ctrl-e: the editor's text lands in the input; Enter sends it, newlines included.
    t.keys(&["C-e"]);
    t.wait_screen("the editor's text in the input", |s| {
        s.contains("line one from the editor")
    });
    t.keys(&["Enter"]);
    let got = p
        .bob
        .wait_messages(&p.direct, "the composed message at bob", |l| {
            l.iter()
                .any(|m| m["text"] == "line one from the editor\nline two")
        });
    assert!(!got.is_empty());
    // `?` is a character in the input; Esc goes to the list, where `?` shows the keys.
    // (Wait for the focus to move first: an Esc directly followed by `?` reads as Alt-?.)
    t.keys(&["Escape"]);
    t.wait_screen("the list focused", |s| s.contains("Tab to type"));
    t.type_text("?");
    let s = t.wait_screen("the help", |s| s.contains("compose in $EDITOR"));
    assert!(s.contains("Ctrl-c"), "{s}");
    t.keys(&["Escape"]);
    t.wait_screen("the help closed", |s| !s.contains("compose in $EDITOR"));
    // A resize redraws at the new size: the status line is on the new last row.
    t.run(&["resize-window", "-t", "t", "-x", "100", "-y", "30"]);
    let s = t.wait_screen("the redraw at 100×30", |s| {
        let lines: Vec<&str> = s.lines().collect();
        lines.len() == 30 && lines[29].contains("daemon: ok") && lines[29].chars().count() <= 100
    });
    assert!(s.contains("straight to the input"), "{s}");
    // SIGTERM restores the terminal too.
    let chat_pid = t.find_process("sotto");
    let ok = Command::new("kill")
        .args(["-TERM", &chat_pid])
        .status()
        .expect("kill");
    assert!(ok.success());
    t.wait_screen("the chat's exit", |s| s.contains("chat-exited-0"));
    assert_eq!(t.format("#{alternate_on}"), "0");
}
