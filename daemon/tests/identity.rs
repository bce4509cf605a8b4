//! The device key in a real Secret Service (gnome-keyring on a private bus) and in the
//! file store: round trips, isolation, and never a copy on disk or in a log.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Stdio;

use serde_json::{Value, json};

use crate::support::{Daemon, Relay, SecretService, assert_secret_absent, files_under};

fn create(d: &Daemon, relay: &Relay, name: &str) -> Value {
    d.client()
        .ok("account.create", json!({"name": name, "relay": relay.host}))
}

fn user_of(account: &Value) -> String {
    format!(
        "{}/{}",
        account["address"].as_str().unwrap(),
        account["device_id"].as_str().unwrap()
    )
}

#[test]
fn secret_service_round_trip_keeps_the_key_out_of_disk_and_logs() {
    let ss = SecretService::start();
    let relay = Relay::start();
    let mut d = Daemon::new("secret-service").with_bus(&ss.address);
    d.start();
    let account = create(&d, &relay, "alice");
    assert_eq!(account["key_store"], "secret-service");
    let secret = ss
        .lookup(&user_of(&account))
        .expect("the key is in the Secret Service under service=sotto");
    assert_eq!(secret.len(), 32, "an Ed25519 seed");
    d.stop();
    d.start();
    let again = d.client().ok("account.info", json!({}));
    assert_eq!(
        again["fingerprint"], account["fingerprint"],
        "same key after restart"
    );
    assert_eq!(again["device_id"], account["device_id"]);
    d.stop();
    assert_secret_absent(d.root.path(), &secret, &[]);
    assert!(
        !d.log_text().is_empty(),
        "the log was written (and searched)"
    );
}

#[test]
fn two_daemons_sharing_one_secret_service_keep_distinct_keys() {
    let ss = SecretService::start();
    let relay = Relay::start();
    let mut a = Daemon::new("secret-service").with_bus(&ss.address);
    let mut b = Daemon::new("secret-service").with_bus(&ss.address);
    a.start();
    b.start();
    // The same name on two relays, one Secret Service: entries are per address and device.
    let acc_a = create(&a, &relay, "same");
    let relay_b = Relay::start();
    let acc_b = create(&b, &relay_b, "same");
    assert_ne!(acc_a["device_id"], acc_b["device_id"]);
    assert_ne!(acc_a["fingerprint"], acc_b["fingerprint"]);
    let key_a = ss.lookup(&user_of(&acc_a)).unwrap();
    let key_b = ss.lookup(&user_of(&acc_b)).unwrap();
    assert_ne!(key_a, key_b);
    a.stop();
    b.stop();
    a.start();
    b.start();
    assert_eq!(
        a.client().ok("account.info", json!({}))["fingerprint"],
        acc_a["fingerprint"]
    );
    assert_eq!(
        b.client().ok("account.info", json!({}))["fingerprint"],
        acc_b["fingerprint"]
    );
}

#[test]
fn file_store_round_trip_with_a_0600_key_file() {
    let relay = Relay::start();
    let mut d = Daemon::new("file");
    d.start();
    let account = create(&d, &relay, "filer");
    assert_eq!(account["key_store"], "file");
    d.stop();
    // Two entries: the device key and the database key.
    let keys: Vec<_> = files_under(&d.data_dir().join("keys"));
    assert_eq!(keys.len(), 2, "{keys:?}");
    let key_file = device_key_file(&d, &account);
    assert!(keys.contains(&key_file), "{keys:?}");
    for k in &keys {
        assert_eq!(
            std::fs::metadata(k).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert_eq!(
        std::fs::metadata(d.data_dir().join("keys"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let secret = std::fs::read(&key_file).unwrap();
    assert_eq!(secret.len(), 32);
    d.start();
    assert_eq!(
        d.client().ok("account.info", json!({}))["fingerprint"],
        account["fingerprint"]
    );
    d.stop();
    assert_secret_absent(d.root.path(), &secret, std::slice::from_ref(&key_file));
}

/// The file store's file of the device key of `account`.
fn device_key_file(d: &Daemon, account: &Value) -> std::path::PathBuf {
    d.data_dir()
        .join("keys")
        .join(format!("{}.key", hex::encode(user_of(account))))
}

#[test]
fn an_unavailable_secret_service_is_named_with_the_alternatives_and_nothing_is_created() {
    // Its bus address points nowhere: the database key cannot be stored, so the daemon
    // refuses to start rather than keep a database in clear.
    let d = Daemon::new("secret-service");
    let out = d.command().stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("secret-service key store is unavailable"),
        "{msg}"
    );
    assert!(
        msg.contains("keyutils") && msg.contains("file") && msg.contains("SOTTO_KEY_STORE"),
        "{msg}"
    );
    let left: Vec<_> = files_under(&d.data_dir())
        .into_iter()
        .filter(|p| !p.ends_with("sottod.lock"))
        .collect();
    assert!(
        left.is_empty(),
        "no database, no key file, no silent fallback: {left:?}"
    );
}

#[test]
fn a_missing_key_stops_the_start_with_a_clear_error() {
    let relay = Relay::start();
    let mut d = Daemon::new("file");
    d.start();
    let account = create(&d, &relay, "lost");
    d.stop();
    std::fs::remove_file(device_key_file(&d, &account)).unwrap();
    let out = d.command().stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("has no key for lost@{}/", relay.host)),
        "{err}"
    );
}

#[test]
fn an_unknown_key_store_name_is_refused_at_start() {
    let mut d = Daemon::new("vault");
    d.set_env("SOTTO_KEY_STORE", "vault");
    let out = d.command().stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown key store \"vault\""));
}

#[test]
fn keyutils_keeps_the_key_in_the_kernel_across_sessions() {
    let relay = Relay::start();
    // A fresh session keyring for each run of the daemon, as separate logins would have.
    let mut d = Daemon::new("keyutils").wrapped(&["keyctl", "session", "-"]);
    d.start();
    let account = create(&d, &relay, "kay");
    assert_eq!(account["key_store"], "keyutils");
    assert!(!d.data_dir().join("keys").exists(), "no key file on disk");
    d.stop();
    // The store links the key into the user's persistent keyring too, so a new session
    // finds it.
    d.start();
    let again = d.client().ok("account.info", json!({}));
    assert_eq!(again["fingerprint"], account["fingerprint"]);
    d.stop();
}
