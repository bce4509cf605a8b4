//! `sotto completions` loaded by real bash, zsh and fish; `sotto man`, `sottod --man` and
//! `sotto-relay --man` rendered by groff and man.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{require_tool, run_ok};
use crate::support::bin;

fn stdout(what: &str, cmd: Command) -> String {
    let out = run_ok(what, cmd, Duration::from_secs(60));
    String::from_utf8(out.stdout).expect("utf-8")
}

fn completion_script(shell: &str, dir: &Path) -> std::path::PathBuf {
    let mut cmd = Command::new(bin("sotto"));
    cmd.args(["completions", shell]);
    let script = stdout(&format!("sotto completions {shell}"), cmd);
    assert!(script.contains("sotto"), "{script}");
    let path = dir.join(format!("sotto.{shell}"));
    std::fs::write(&path, script).expect("write");
    path
}

/// A shell with a private HOME (fish writes its config there).
fn shell(program: &Path, home: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("LANG", "C.UTF-8");
    cmd
}

#[test]
fn shell_completions_complete_subcommands_in_bash_zsh_and_fish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path();

    let bash = require_tool("bash", "bash");
    let script = completion_script("bash", home);
    let mut cmd = shell(&bash, home);
    cmd.args(["--norc", "--noprofile", "-c"]).arg(format!(
        "source {}; COMP_WORDS=(sotto con); COMP_CWORD=1; COMP_LINE='sotto con'; COMP_POINT=9; \
         _sotto sotto con sotto; printf '%s\\n' \"${{COMPREPLY[@]}}\"; complete -p sotto",
        script.display()
    ));
    let out = stdout("bash completion", cmd);
    let words: Vec<&str> = out.lines().collect();
    assert!(
        words.contains(&"contact") && words.contains(&"conversation"),
        "{out}"
    );
    assert!(!words.contains(&"send"), "only matching words: {out}");
    assert!(out.contains("-F _sotto sotto"), "{out}");

    let zsh = require_tool("zsh", "zsh");
    let script = completion_script("zsh", home);
    let mut cmd = shell(&zsh, home);
    cmd.args(["-f", "-c"]).arg(format!(
        "autoload -U compinit && compinit -u -D && source {} && print -r -- ${{_comps[sotto]}}",
        script.display()
    ));
    assert_eq!(stdout("zsh completion", cmd).trim(), "_sotto");

    let fish = require_tool("fish", "fish");
    let script = completion_script("fish", home);
    let mut cmd = shell(&fish, home);
    cmd.args(["--no-config", "-c"]).arg(format!(
        "source {}; complete -C 'sotto con'; complete -C 'sotto contact '",
        script.display()
    ));
    let out = stdout("fish completion", cmd);
    let words: Vec<&str> = out.lines().filter_map(|l| l.split('\t').next()).collect();
    for w in ["contact", "conversation", "add", "verify", "safety-number"] {
        assert!(words.contains(&w), "fish completes {w}: {out}");
    }
}

/// Renders `page` with groff, failing on any warning.
fn groff_clean(page: &Path) {
    let groff = require_tool("groff", "groff-base");
    let mut cmd = Command::new(groff);
    cmd.args(["-k", "-man", "-Tutf8", "-ww", "-z"]).arg(page);
    let out = run_ok("groff", cmd, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "{}: {stderr}", page.display());
}

fn man_text(page: &Path) -> String {
    let man = require_tool("man", "man-db");
    let mut cmd = Command::new(man);
    cmd.env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LANG", "C.UTF-8")
        .arg("-l")
        .arg(page);
    stdout("man -l", cmd)
}

#[test]
fn man_pages_for_sotto_its_subcommands_the_daemon_the_relay_and_the_protocols() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(bin("sotto"));
    cmd.args(["man", "--dir"]).arg(dir.path());
    let listed = stdout("sotto man --dir", cmd);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for want in [
        "sotto.1",
        "sotto-send.1",
        "sotto-messages.1",
        "sotto-listen.1",
        "sotto-contact.1",
        "sotto-contact-add.1",
        "sotto-conversation-create.1",
        "sotto-completions.1",
        "sotto-jsonrpc.7",
        "sotto-dbus.7",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        assert!(listed.contains(want), "{listed}");
    }
    for name in &names {
        groff_clean(&dir.path().join(name));
    }
    let send = man_text(&dir.path().join("sotto-send.1"));
    assert!(send.contains("sotto-send"), "{send}");
    assert!(send.contains("TEXT") && send.contains("SEE ALSO"), "{send}");
    let jsonrpc = man_text(&dir.path().join("sotto-jsonrpc.7"));
    assert!(jsonrpc.contains("events_expired") && jsonrpc.contains("data.kind"));
    let dbus = man_text(&dir.path().join("sotto-dbus.7"));
    assert!(dbus.contains("org.sotto.Sotto1") && dbus.contains("GetEvents"));
    // Without --dir: sotto(1) on stdout, the same page.
    let out = stdout("sotto man", {
        let mut c = Command::new(bin("sotto"));
        c.arg("man");
        c
    });
    let file = std::fs::read_to_string(dir.path().join("sotto.1")).expect("sotto.1");
    assert_eq!(out, file);
    assert!(out.contains("SOTTO_SOCKET"));

    // sottod(8) and sotto-relay(8), from their own binaries.
    for (binary, title, flag) in [
        ("sottod", ".TH sottod 8", "socket"),
        ("sotto-relay", ".TH sotto-relay 8", "listen"),
    ] {
        let mut cmd = Command::new(bin(binary));
        cmd.arg("--man");
        let page = stdout(&format!("{binary} --man"), cmd);
        assert!(page.contains(title), "{page}");
        let path = dir.path().join(format!("{binary}.8"));
        std::fs::write(&path, &page).expect("write");
        groff_clean(&path);
        let text = man_text(&path);
        assert!(text.contains(&format!("--{flag}")), "{text}");
        assert!(!text.contains("--man"), "the flag stays hidden: {text}");
        let mut cmd = Command::new(bin(binary));
        cmd.arg("--help");
        assert!(!stdout(&format!("{binary} --help"), cmd).contains("--man"));
    }
}
