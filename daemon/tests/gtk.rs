//! `sotto-gtk`, the desktop app, under Xvfb with a private session bus and its own
//! accessibility bus, driven through AT-SPI as assistive technology would
//! (gtk/tests/atspi_driver.py, pyatspi): a real `sottod` owns `org.sotto.Sotto1`, a second
//! daemon and a real relay are the other side.
//!
//! With `SOTTO_GTK_SCREENSHOTS=DIR` the light and dark screenshots go to DIR (docs/ uses
//! them); the startup time and the idle RSS are printed (docs/performance.md).

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{self, Daemon, RawClient, Relay, SessionBus, bin, have, wait_for};

/// Seconds the driver waits for something to show (the machine may be loaded).
const UI_WAIT: f64 = 45.0;

fn require_tools() {
    support::require_tools(
        &["Xvfb", "import", "/usr/bin/python3"],
        "scripts/deps.sh installs xvfb, imagemagick and python3-pyatspi",
    );
    assert!(
        Path::new("/usr/libexec/at-spi-bus-launcher").exists(),
        "at-spi2-core is missing (scripts/deps.sh installs it)"
    );
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import pyatspi"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "python3-pyatspi is missing (scripts/deps.sh installs it)"
    );
}

/// Kills a process group (the a11y bus launcher and what it started).
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

struct Xvfb {
    child: Child,
    display: String,
}

impl Xvfb {
    fn start() -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1000x700x24",
                "-nolisten",
                "tcp",
                "-noreset",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn Xvfb");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("Xvfb's display number");
        let n: u32 = line.trim().parse().expect("a display number");
        Xvfb {
            child,
            display: format!(":{n}"),
        }
    }

    /// The whole screen (the window fills it) as a PNG.
    fn screenshot(&self, to: &Path) {
        let out = Command::new("import")
            .args(["-display", &self.display, "-window", "root"])
            .arg(to)
            .output()
            .expect("run import");
        assert!(
            out.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// The accessibility bus (`org.a11y.Bus` on the session bus, the registry on its own bus).
struct A11yBus {
    child: Child,
}

impl A11yBus {
    fn start(bus: &SessionBus, env: &[(String, String)]) -> A11yBus {
        let child = Command::new("/usr/libexec/at-spi-bus-launcher")
            .arg("--launch-immediately")
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn at-spi-bus-launcher");
        wait_for("the accessibility bus", || {
            bus.has_owner("org.a11y.Bus").then_some(())
        });
        A11yBus { child }
    }
}

impl Drop for A11yBus {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// A running `sotto-gtk`.
struct App {
    child: Child,
    log: PathBuf,
    started: Instant,
}

impl App {
    fn start(env: &[(String, String)], log: PathBuf, extra: &[(&str, &str)]) -> App {
        let file = std::fs::File::create(&log).expect("app log");
        let started = Instant::now();
        let child = Command::new(bin("sotto-gtk"))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().copied())
            .env("SOTTO_GTK_TIMING", "1")
            .env("SOTTO_GTK_DEBUG", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn sotto-gtk");
        App {
            child,
            log,
            started,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Until the app's log (`SOTTO_GTK_DEBUG`) has a line containing `what`.
    fn wait_log(&mut self, what: &str) {
        wait_long(&format!("the app to log {what:?}"), || {
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("sotto-gtk exited ({s}):\n{}", self.log_text());
            }
            self.log_text().contains(what).then_some(())
        });
    }

    /// (ms the app reports from its start to the first painted list, ms the test saw).
    fn first_paint(&mut self) -> (u64, u128) {
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!("sotto-gtk exited ({s}):\n{}", self.log_text());
            }
            let t = self.log_text();
            let ms = t
                .lines()
                .find(|l| l.contains("first conversation list painted"))
                .and_then(|l| l.split("after ").nth(1)?.split(' ').next()?.parse().ok());
            if let Some(ms) = ms {
                return (ms, self.started.elapsed().as_millis());
            }
            assert!(
                self.started.elapsed() < Duration::from_secs_f64(UI_WAIT),
                "no conversation list painted:\n{t}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the app's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The AT-SPI driver process (gtk/tests/atspi_driver.py).
struct Driver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Driver {
    fn start(env: &[(String, String)]) -> Driver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gtk/tests/atspi_driver.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg("sotto-gtk")
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the AT-SPI driver");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("driver ready line");
        assert!(line.contains("ready"), "driver did not start: {line:?}");
        Driver {
            child,
            stdin,
            stdout,
        }
    }

    fn try_cmd(&mut self, cmd: Value) -> Result<Value, String> {
        writeln!(self.stdin, "{cmd}").expect("write to driver");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("driver reply");
        if line.is_empty() {
            let _ = self.child.wait();
            panic!(
                "the AT-SPI driver ended ({:?}) on {cmd}",
                self.child.try_wait()
            );
        }
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        match v.get("error") {
            Some(e) => Err(e.as_str().unwrap_or_default().to_owned()),
            None => Ok(v),
        }
    }

    fn cmd(&mut self, app: &App, cmd: Value) -> Value {
        self.try_cmd(cmd.clone()).unwrap_or_else(|e| {
            panic!(
                "AT-SPI {cmd}: {e}\n--- sotto-gtk log ---\n{}",
                app.log_text()
            )
        })
    }

    /// The names of showing accessibles with `role` whose name matches `re`; waits for one.
    fn wait(&mut self, app: &App, role: &str, re: &str) -> Vec<String> {
        let v = self.cmd(
            app,
            json!({"op": "wait", "role": role, "name": re, "timeout": UI_WAIT}),
        );
        names(&v)
    }

    /// Gives the main window the keyboard (there is no window manager: the driver does what
    /// one does on a click) and waits until the app says its window is active.
    fn activate(&mut self, app: &App) {
        self.cmd(
            app,
            json!({"op": "activate", "name": "^Sotto$", "timeout": UI_WAIT}),
        );
        wait_long("the window to be active", || {
            let log = app.log_text();
            let last = log.lines().rev().find(|l| l.contains("window active:"))?;
            last.ends_with("true").then_some(())
        });
    }

    fn names(&mut self, app: &App, role: &str, re: &str) -> Vec<String> {
        names(&self.cmd(app, json!({"op": "names", "role": role, "name": re})))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn names(v: &Value) -> Vec<String> {
    v["names"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Polls `f` like `support::wait_for`, with the UI's longer deadline: group setup and
/// delivery go through a relay and two daemons on a machine that may be busy.
fn wait_long<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs_f64(UI_WAIT),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One JSON-RPC call on `d`'s socket; `None` on an error reply.
fn rpc(d: &Daemon, method: &str, params: Value) -> Option<Value> {
    let mut c = RawClient::connect(&d.socket()).ok()?;
    c.call(method, params).get("result").cloned()
}

fn conversations(d: &Daemon) -> Vec<Value> {
    rpc(d, "conversation.list", json!({}))
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn wait_conversation(d: &Daemon, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_long(what, || conversations(d).into_iter().find(|c| pred(c)))
}

fn wait_messages(d: &Daemon, conv: &str, what: &str, pred: impl Fn(&[Value]) -> bool) {
    wait_long(what, || {
        let l = rpc(
            d,
            "message.list",
            json!({"conversation": conv, "limit": 1000}),
        )?;
        pred(l.as_array()?).then_some(())
    })
}

/// `conversation.create` on `d` (a group when `name` is given) and waits until `peer`
/// (another daemon) joined it.
fn group(d: &Daemon, peer: &Daemon, members: &[&str], name: Option<&str>) -> String {
    let params = match name {
        Some(n) => json!({"members": members, "name": n}),
        None => json!({"members": members}),
    };
    let c = d.client().ok("conversation.create", params);
    let id = c["id"].as_str().expect("id").to_owned();
    wait_conversation(peer, "the peer to join", |c| c["id"] == json!(id));
    wait_conversation(d, "the group to be set up", |c| {
        c["id"] == json!(id) && c["pending"].as_array().is_some_and(|p| p.is_empty())
    });
    id
}

fn send(d: &Daemon, conv: &str, text: &str) {
    d.client()
        .ok("message.send", json!({"conversation": conv, "text": text}));
}

/// The daemon's own unread count of `conv`.
fn unread(d: &Daemon, conv: &str) -> Option<u64> {
    rpc(d, "conversation.get", json!({"conversation": conv}))?["unread"].as_u64()
}

/// The environment of the app, the driver and the accessibility bus: their own XDG dirs
/// under `home`, the X display and the private session bus.
fn ui_env(home: &Path, x: &Xvfb, bus: &SessionBus) -> Vec<(String, String)> {
    for d in ["home", "run", "config", "data", "cache"] {
        std::fs::create_dir(home.join(d)).expect("mkdir");
    }
    let p = |d: &str| home.join(d).display().to_string();
    [
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("HOME", p("home")),
        ("XDG_RUNTIME_DIR", p("run")),
        ("XDG_CONFIG_HOME", p("config")),
        ("XDG_DATA_HOME", p("data")),
        ("XDG_CACHE_HOME", p("cache")),
        ("DISPLAY", x.display.clone()),
        ("DBUS_SESSION_BUS_ADDRESS", bus.address.clone()),
        ("GSETTINGS_BACKEND", "memory".into()),
        ("GDK_BACKEND", "x11".into()),
        ("GSK_RENDERER", "cairo".into()),
        ("GTK_A11Y", "atspi".into()),
        ("LANG", "C.UTF-8".into()),
        ("TZ", "UTC".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Asks a daemon started by the bus (not by the test) to stop.
struct ShutdownOnDrop(PathBuf);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if let Ok(mut c) = RawClient::connect(&self.0) {
            c.call("daemon.shutdown", json!({}));
        }
    }
}

/// Nobody owns `org.sotto.Sotto1` when the app starts: the bus starts `sottod` from the
/// activation file (contrib/dbus, `Exec` pointing at the binary under test) because the
/// app asks for it, and the app then offers the first-run dialog of that daemon.
#[test]
fn the_desktop_app_starts_the_daemon_through_dbus_activation() {
    require_tools();
    let d = Daemon::new("file");
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/dbus/org.sotto.Sotto1.service"),
    )
    .expect("the activation file");
    let service: Vec<String> = template
        .lines()
        .map(|l| match l.starts_with("Exec=") {
            true => format!("Exec={} --foreground", bin("sottod").display()),
            false => l.to_owned(),
        })
        .collect();
    let services = d.root.path().join("services");
    std::fs::create_dir(&services).expect("mkdir");
    std::fs::write(
        services.join("org.sotto.Sotto1.service"),
        service.join("\n") + "\n",
    )
    .expect("service file");
    let bus = SessionBus::with_activation(&services, &d.env);
    let _stop = ShutdownOnDrop(d.socket());
    assert!(!bus.has_owner("org.sotto.Sotto1"));

    let x = Xvfb::start();
    let home = tempfile::Builder::new()
        .prefix("sotto-gtk-home")
        .tempdir()
        .expect("tempdir");
    let env = ui_env(home.path(), &x, &bus);
    let _a11y = A11yBus::start(&bus, &env);
    let mut app = App::start(&env, home.path().join("app.log"), &[]);
    // The app's first call (with its name watch asking for the name) makes the bus start
    // the daemon; the app then finds no account there.
    app.wait_log("loaded: Ok(false)");
    let mut ui = Driver::start(&env);
    ui.wait(&app, "text", "^Account name$");
    assert!(bus.has_owner("org.sotto.Sotto1"));
    // The daemon the bus started is the one with this data dir (its socket answers), and
    // it has no account yet.
    let status = rpc(&d, "daemon.status", json!({})).expect("the activated daemon");
    assert!(status["protocol"].is_u64(), "{status}");
    assert!(rpc(&d, "account.info", json!({})).is_none());
}

#[test]
fn the_desktop_app_through_atspi() {
    require_tools();
    let relay = Relay::start();
    let bus = SessionBus::start();
    // Alice's daemon owns the name but has no account yet: the app's first run creates it.
    let mut alice = Daemon::new("file").with_bus(&bus.address);
    alice.start();
    let mut bob = Daemon::new("file");
    let b = bob.account(&relay, "bob");
    wait_for("alice to own org.sotto.Sotto1", || {
        bus.has_owner("org.sotto.Sotto1").then_some(())
    });

    let x = Xvfb::start();
    let home = tempfile::Builder::new()
        .prefix("sotto-gtk-home")
        .tempdir()
        .expect("tempdir");
    let env = ui_env(home.path(), &x, &bus);
    let _a11y = A11yBus::start(&bus, &env);
    let logs = tempfile::Builder::new()
        .prefix("sotto-gtk-logs")
        .tempdir()
        .expect("tempdir");

    let mut app = App::start(&env, logs.path().join("light.log"), &[]);
    app.wait_log("loaded: Ok(false)");
    let mut ui = Driver::start(&env);
    // There is no window manager: X gives the keyboard to the window under the pointer.
    ui.cmd(&app, json!({"op": "pointer", "x": 300, "y": 300}));

    // First run: the daemon has no account; the app's dialog creates it (CreateAccount).
    ui.cmd(
        &app,
        json!({"op": "set_text", "role": "text", "name": "^Account name$", "text": "alice", "timeout": UI_WAIT}),
    );
    ui.cmd(
        &app,
        json!({"op": "set_text", "role": "text", "name": "^Relay$", "text": relay.host}),
    );
    ui.cmd(
        &app,
        json!({"op": "click", "role": "push button", "name": "(^| )Create account$", "timeout": UI_WAIT}),
    );
    let account = wait_long("the app to create alice's account", || {
        rpc(&alice, "account.info", json!({}))
    });
    let a = account["address"].as_str().expect("address").to_owned();
    assert!(a.starts_with("alice@"), "{account}");
    app.first_paint();
    ui.wait(&app, "label", "^No conversations$");

    // Conversations appear live: a direct one (by the peer's address) and a group.
    let direct = group(&bob, &alice, &[&a], None);
    let club = group(&bob, &alice, &[&a], Some("book club"));
    send(&bob, &direct, "hello from bob");
    let bob_re = regex_escape(&b);
    ui.wait(
        &app,
        "list item",
        &format!("^{bob_re}, 1 unread message, last: hello from bob"),
    );
    ui.wait(&app, "list item", "^book club");

    // A message in a conversation that is not open: it appears live, with an unread badge
    // (the daemon's count), and its conversation moves to the top.
    send(&bob, &club, "who read chapter one");
    ui.wait(
        &app,
        "list item",
        "^book club, 1 unread message, last: who read chapter one",
    );
    send(&bob, &club, "nobody?");
    ui.wait(
        &app,
        "list item",
        "^book club, 2 unread messages, last: nobody\\?",
    );
    assert_eq!(unread(&alice, &club), Some(2));
    ui.cmd(
        &app,
        json!({"op": "first", "list": "^Conversations$", "name": "^book club", "timeout": UI_WAIT}),
    );
    let idle_rss = app.rss_kib();

    // Opening it shows the messages, clears the badge and marks it read in the daemon
    // (MarkRead); the other conversation keeps its badge.
    ui.cmd(
        &app,
        json!({"op": "select", "list": "^Conversations$", "name": "^book club", "timeout": UI_WAIT}),
    );
    ui.wait(&app, "list item", &format!("^{bob_re} at .*: nobody\\?"));
    ui.wait(&app, "list item", "^book club, last: nobody\\?");
    wait_long("the daemon to count book club as read", || {
        (unread(&alice, &club) == Some(0)).then_some(())
    });
    assert_eq!(unread(&alice, &direct), Some(1));
    ui.wait(
        &app,
        "list item",
        &format!("^{bob_re}, 1 unread message, last: hello from bob"),
    );
    // A live message into the open conversation (the window is active): shown, read.
    ui.activate(&app);
    ui.cmd(
        &app,
        json!({"op": "focused", "name": "^Message$", "timeout": UI_WAIT}),
    );
    send(&bob, &club, "chapter two then");
    ui.wait(
        &app,
        "list item",
        &format!("^{bob_re} at .*: chapter two then"),
    );
    ui.wait(&app, "list item", "^book club, last: chapter two then");

    // Compose: Shift+Enter is a newline, Enter sends; the other daemon receives it.
    let compose = |ui: &mut Driver, op: &str, text: &str| {
        ui.cmd(
            &app,
            json!({"op": op, "role": "text", "name": "^Message$", "text": text}),
        );
    };
    compose(&mut ui, "append_text", "i did");
    ui.cmd(
        &app,
        json!({"op": "key", "key": "shift+Return", "to": "^Message$", "timeout": UI_WAIT}),
    );
    compose(&mut ui, "append_text", "twice");
    let typed = ui.cmd(
        &app,
        json!({"op": "text", "role": "text", "name": "^Message$"}),
    );
    assert_eq!(typed["text"], json!("i did\ntwice"));
    ui.cmd(
        &app,
        json!({"op": "key", "key": "Return", "to": "^Message$", "timeout": UI_WAIT}),
    );
    wait_messages(&bob, &club, "bob to receive alice's message", |m| {
        m.iter().any(|m| m["text"] == json!("i did\ntwice"))
    });
    ui.wait(&app, "list item", "^You at .*: i did twice \\(sent\\)");
    let typed = ui.cmd(
        &app,
        json!({"op": "text", "role": "text", "name": "^Message$"}),
    );
    assert_eq!(typed["text"], json!(""), "the compose entry is emptied");

    // A new conversation through the dialog.
    ui.cmd(
        &app,
        json!({"op": "click", "role": "push button", "name": "^New conversation$"}),
    );
    ui.cmd(
        &app,
        json!({"op": "set_text", "role": "text", "name": "^Addresses$", "text": b, "timeout": UI_WAIT}),
    );
    ui.cmd(
        &app,
        json!({"op": "set_text", "role": "text", "name": "^Name \\(optional\\)$", "text": "planning"}),
    );
    ui.cmd(
        &app,
        json!({"op": "click", "role": "push button", "name": "(^| )Create$"}),
    );
    ui.wait(&app, "list item", "^planning");
    ui.activate(&app);
    let planning = wait_conversation(&bob, "bob to join planning", |c| {
        c["name"] == json!("planning")
    });
    assert_eq!(
        planning["members"].as_array().map(Vec::len),
        Some(2),
        "{planning}"
    );

    // The members popover of the open conversation (planning): bob's safety number is the
    // one the daemon computes; Verify records it (VerifyContact).
    ui.cmd(
        &app,
        json!({"op": "click", "role": "push button", "name": "^Members$"}),
    );
    ui.cmd(
        &app,
        json!({"op": "click", "role": "push button", "name": format!("^Safety number of {bob_re}$"), "timeout": UI_WAIT}),
    );
    let number = rpc(&alice, "contact.safety_number", json!({"address": b}))
        .and_then(|v| v["safety_number"].as_str().map(str::to_owned))
        .expect("the daemon's safety number for bob");
    ui.wait(
        &app,
        "label",
        &format!("^Safety number {}$", regex_escape(&number)),
    );
    ui.cmd(
        &app,
        json!({"op": "click", "role": "push button", "name": "(^| )Verify$"}),
    );
    wait_long("bob to be a verified contact", || {
        let contacts = rpc(&alice, "contact.list", json!({}))?;
        contacts
            .as_array()?
            .iter()
            .any(|c| c["address"] == json!(b) && c["verified"] == json!(true))
            .then_some(())
    });
    ui.wait(&app, "label", &format!("^{bob_re} is verified$"));
    ui.activate(&app);

    // Search (SearchMessages): the hits replace the list; choosing one opens its
    // conversation.
    ui.cmd(
        &app,
        json!({"op": "click", "role": "push button", "name": "^Search$"}),
    );
    ui.cmd(
        &app,
        json!({"op": "set_text", "name": "^Search messages$", "text": "chapter", "timeout": UI_WAIT}),
    );
    ui.wait(
        &app,
        "list item",
        &format!("^{bob_re} in book club: .*\\[chapter\\] two then"),
    );
    ui.wait(
        &app,
        "list item",
        &format!("^{bob_re} in book club: who read \\[chapter\\] one"),
    );
    ui.cmd(
        &app,
        json!({"op": "set_text", "name": "^Search messages$", "text": "hel"}),
    );
    ui.cmd(
        &app,
        json!({"op": "select", "list": "^Search results$", "name": format!("^{bob_re} in {bob_re}: \\[hello\\] from bob"), "timeout": UI_WAIT}),
    );
    // The daemon goes away while the direct conversation is open: the window says so;
    // what arrives meanwhile shows once.
    ui.wait(
        &app,
        "list item",
        &format!("^{bob_re} at .*: hello from bob"),
    );
    ui.cmd(
        &app,
        json!({"op": "click", "role": "push button", "name": "^Search$"}),
    );
    ui.wait(&app, "list item", "^planning");
    alice.stop();
    ui.wait(&app, "label", "daemon is not running");
    send(&bob, &direct, "while you were away");
    alice.start();
    ui.wait(
        &app,
        "list item",
        &format!("^{bob_re} at .*: while you were away"),
    );
    ui.cmd(
        &app,
        json!({"op": "gone", "role": "label", "name": "daemon is not running", "timeout": UI_WAIT}),
    );
    send(&bob, &direct, "welcome back");
    ui.wait(&app, "list item", &format!("^{bob_re} at .*: welcome back"));
    let away = ui.names(&app, "list item", "while you were away$");
    assert_eq!(away.len(), 1, "shown {} times: {away:?}", away.len());
    let all = ui.names(&app, "list item", &format!("^{bob_re} at "));
    assert_eq!(
        all.len(),
        3,
        "hello, while you were away, welcome back: {all:?}"
    );

    // Screenshots: the window as it is (light), then a fresh start in the dark style; the
    // pointer off the buttons (no tooltip).
    ui.cmd(&app, json!({"op": "pointer", "x": 200, "y": 420}));
    ui.cmd(
        &app,
        json!({"op": "gone", "role": "tool tip", "name": ".", "timeout": UI_WAIT}),
    );
    let shots = std::env::var_os("SOTTO_GTK_SCREENSHOTS").map(PathBuf::from);
    let light = shots.clone().unwrap_or_else(|| logs.path().to_owned());
    x.screenshot(&light.join("desktop-light.png"));
    drop(ui);
    drop(app);

    // A second start (the daemon has three conversations): the list as the daemon has it.
    let mut dark = App::start(
        &env,
        logs.path().join("dark.log"),
        &[("ADW_DEBUG_COLOR_SCHEME", "prefer-dark")],
    );
    let (paint_ms, seen_ms) = dark.first_paint();
    let mut ui = Driver::start(&env);
    ui.wait(&dark, "list item", "^book club, last: i did twice");
    ui.wait(&dark, "list item", "^planning");
    // The badge is the daemon's count (no unread left if the window was active when the
    // messages came in).
    let badge = match unread(&alice, &direct) {
        Some(0) => String::new(),
        Some(1) => ", 1 unread message".to_owned(),
        n => format!(", {} unread messages", n.unwrap_or_default()),
    };
    ui.wait(
        &dark,
        "list item",
        &format!("^{bob_re}{badge}, last: welcome back"),
    );
    let started_rss = dark.rss_kib();
    ui.cmd(
        &dark,
        json!({"op": "select", "list": "^Conversations$", "name": "^book club", "timeout": UI_WAIT}),
    );
    ui.wait(&dark, "list item", "^You at .*: i did twice");
    x.screenshot(&light.join("desktop-dark.png"));
    eprintln!(
        "sotto-gtk: first list (3 conversations) painted {paint_ms} ms after start (the test \
         saw it at {seen_ms} ms); RSS {started_rss} KiB after start, {idle_rss} KiB idle \
         after the first run's messages"
    );
}

#[test]
fn the_desktop_files_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/desktop");
    for (tool, args, file) in [
        ("desktop-file-validate", vec![], "org.sotto.Sotto.desktop"),
        (
            "appstreamcli",
            vec!["validate", "--no-net", "--pedantic"],
            "org.sotto.Sotto.metainfo.xml",
        ),
    ] {
        assert!(
            have(tool),
            "{tool} is missing: scripts/deps.sh installs desktop-file-utils and appstream"
        );
        let out = Command::new(tool)
            .args(&args)
            .arg(dir.join(file))
            .output()
            .expect("run validator");
        assert!(
            out.status.success(),
            "{tool} {file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let icon = std::fs::read_to_string(dir.join("icons/hicolor/scalable/apps/org.sotto.Sotto.svg"))
        .expect("the scalable icon");
    assert!(
        icon.contains("<svg") && icon.contains("viewBox"),
        "not an SVG icon"
    );
    let desktop = std::fs::read_to_string(dir.join("org.sotto.Sotto.desktop")).expect("desktop");
    assert!(desktop.contains("\nIcon=org.sotto.Sotto\n") && desktop.contains("\nExec=sotto-gtk\n"));
}
