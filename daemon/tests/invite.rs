//! Invite-only relays end to end: `sotto account create --invite`, and accounts on an open
//! relay talking to an invited one.

use crate::support::{Daemon, Relay, bin, wait_for};

fn invite(admin_key: &std::path::Path, uses: &str) -> String {
    let out = std::process::Command::new(bin("sotto-relay"))
        .args(["invite", "create", "--uses", uses, "--admin-key"])
        .arg(admin_key)
        .output()
        .expect("run sotto-relay invite create");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().last().unwrap().to_owned()
}

#[test]
fn an_invited_account_talks_to_an_account_on_an_open_relay() {
    let keys = tempfile::tempdir().unwrap();
    let admin = keys.path().join("admin.key");
    let token = invite(&admin, "1");
    let closed = Relay::start_with(&["--invite-only", "--admin-key", admin.to_str().unwrap()]);
    let open = Relay::start();

    let mut alice = Daemon::new("file");
    alice.start();
    let create = |d: &Daemon, extra: &[&str]| {
        let mut args = vec!["account", "create", "--relay", closed.host.as_str()];
        args.extend_from_slice(extra);
        args.push("alice");
        d.sotto(&args)
    };
    let out = create(&alice, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("invite-only") && err.contains("--invite"),
        "{err}"
    );
    let r = alice.client().call(
        "account.create",
        serde_json::json!({"name": "alice", "relay": closed.host, "invite": "sotto-invite1.x"}),
    );
    assert_eq!(r["error"]["data"]["kind"], "invite_invalid", "{r}");
    // Nothing was recorded by the refusals.
    let r = alice.client().call("account.info", serde_json::json!({}));
    assert_eq!(r["error"]["data"]["kind"], "no_account", "{r}");
    let out = create(&alice, &["--invite", &token]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alice_a = format!("alice@{}", closed.host);

    // The single use is gone: another daemon cannot register with it.
    let mut carol = Daemon::new("file");
    carol.start();
    let r = carol.client().call(
        "account.create",
        serde_json::json!({"name": "carol", "relay": closed.host, "invite": token}),
    );
    assert_eq!(r["error"]["data"]["kind"], "invite_invalid", "{r}");

    let mut bob = Daemon::new("file");
    bob.account(&open, "bob");
    // A restart reconnects alice to the invite-only relay without a new invitation.
    alice.stop();
    alice.start();
    wait_for("alice's relay connection", || {
        let s = alice.client().ok("daemon.status", serde_json::json!({}));
        s["relays"]
            .as_array()?
            .iter()
            .any(|r| r["connected"] == true)
            .then_some(())
    });
    let conv = bob.sotto_json(&["conversation", "create", &alice_a]);
    assert_eq!(conv["state"], "active", "{conv}");
    let id = conv["id"].as_str().unwrap().to_owned();
    alice.wait_conversation("bob's Welcome", |c| c["id"] == id.as_str());
    bob.sotto_json(&["send", &id, "hello from an open relay"]);
    alice.sotto_json(&["send", &id, "hello from a closed one"]);
    for d in [&alice, &bob] {
        let got = d.wait_messages(&id, "both messages", |l| l.len() == 2);
        let texts: Vec<&str> = got.iter().filter_map(|m| m["text"].as_str()).collect();
        assert!(texts.contains(&"hello from an open relay"), "{texts:?}");
        assert!(texts.contains(&"hello from a closed one"), "{texts:?}");
    }
}
