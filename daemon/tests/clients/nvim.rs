//! The Neovim plugin (`contrib/nvim`) under `nvim --headless`, against real daemons.

use std::time::Duration;

use super::{World, require_tool, run_ok};

#[test]
fn nvim_plugin_against_real_daemons() {
    let nvim = require_tool("nvim", "neovim");
    let world = World::start(&["alice", "bob"]);
    let mut cmd = world.command(nvim);
    cmd.args([
        "--headless",
        "-u",
        "NONE",
        "-i",
        "NONE",
        "-n",
        "--cmd",
        "set rtp^=contrib/nvim",
        "-c",
        "luafile contrib/nvim/tests/run.lua",
    ]);
    let out = run_ok("nvim --headless", cmd, Duration::from_secs(300));
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    let summary = text
        .lines()
        .find(|l| l.ends_with(" failed") && l.contains(" passed, "))
        .unwrap_or_else(|| panic!("no summary line:\n{text}"));
    assert!(summary.ends_with(", 0 failed"), "{text}");
    let passed: u32 = summary
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 10, "the whole suite ran: {summary}");
}
