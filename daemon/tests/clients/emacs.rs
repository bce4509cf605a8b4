//! The Emacs package (`contrib/emacs/sotto.el`): byte-compiles without warnings,
//! package-lint (Debian's elpa-package-lint) accepts it, and its ERT suite passes under
//! `emacs --batch` against real daemons.

use std::process::Command;
use std::time::Duration;

use super::{World, repo, require_tool, run_ok};

/// Where Debian's elpa-package-lint installs package-lint.
const ELPA: &str = "/usr/share/emacs/site-lisp/elpa";

#[test]
fn emacs_package_byte_compiles_without_warnings() {
    let emacs = require_tool("emacs", "emacs-nox");
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("sotto.el");
    std::fs::copy(repo().join("contrib/emacs/sotto.el"), &copy).expect("copy");
    let mut cmd = Command::new(emacs);
    cmd.current_dir(dir.path()).args([
        "--batch",
        "-Q",
        "--eval",
        "(setq byte-compile-error-on-warn t)",
        "-f",
        "batch-byte-compile",
        "sotto.el",
    ]);
    let out = run_ok("byte-compile sotto.el", cmd, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("Warning"), "{stderr}");
    assert!(dir.path().join("sotto.elc").exists());
}

#[test]
fn emacs_package_lint_accepts_the_headers() {
    let emacs = require_tool("emacs", "emacs-nox");
    let has_lint = std::fs::read_dir(ELPA)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("package-lint-"))
        })
        .unwrap_or(false);
    assert!(
        has_lint,
        "package-lint is not installed under {ELPA}: run scripts/deps.sh (Debian package elpa-package-lint)"
    );
    let mut cmd = Command::new(emacs);
    cmd.current_dir(repo().join("contrib/emacs")).args([
        "--batch",
        "-Q",
        "--eval",
        &format!(
            "(progn (require 'package) (add-to-list 'package-directory-list {ELPA:?}) \
             (package-initialize) (require 'package-lint))"
        ),
        "-f",
        "package-lint-batch-and-exit",
        "sotto.el",
    ]);
    let out = run_ok("package-lint sotto.el", cmd, Duration::from_secs(120));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains("error:") && !all.contains("warning:"),
        "{all}"
    );
}

#[test]
fn emacs_ert_suite_against_real_daemons() {
    let emacs = require_tool("emacs", "emacs-nox");
    let world = World::start(&["alice", "bob"]);
    let mut cmd = world.command(emacs);
    cmd.args([
        "--batch",
        "-Q",
        "-L",
        "contrib/emacs",
        "-l",
        "contrib/emacs/test/sotto-test.el",
        "-f",
        "ert-run-tests-batch-and-exit",
    ]);
    let out = run_ok("emacs --batch (ERT)", cmd, Duration::from_secs(300));
    let text = String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    let summary = text
        .lines()
        .find(|l| l.starts_with("Ran "))
        .unwrap_or_else(|| panic!("no ERT summary:\n{text}"));
    assert!(summary.contains(" 0 unexpected"), "{summary}");
    let ran: u32 = summary
        .split(' ')
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(ran >= 10, "the whole suite ran: {summary}");
}
