//! Several relay processes on one PostgreSQL database: every guarantee holds across them.

use std::collections::HashSet;
use std::time::Instant;

use openmls::prelude::MlsGroup;
use sotto_protocol::relay::{Push, RelayErrorKind, Request, Response};

use crate::client::{Client, Device, post_id};
use crate::harness::{DEADLINE, Relay, bin};
use crate::mls::{self, CS_ID, gid, kp, last_resort};

async fn create(c: &mut Client, group_id: &[u8]) {
    let r = c
        .request(Request::CreateGroup {
            group_id: group_id.to_vec(),
        })
        .await;
    assert!(matches!(r, Ok(Response::Group(_))), "create group: {r:?}");
}

/// A group `owner` creates through `c`, whose first commit (seq 1, epoch 1) puts `member`
/// on the access list; returns it (merged) and its id.
async fn group_with(c: &mut Client, owner: &Device, member: &Device) -> (MlsGroup, Vec<u8>) {
    let mut g = mls::new_group(owner);
    let id = gid(&g);
    create(c, &id).await;
    let c0 = mls::self_update(&mut g, owner);
    mls::merge(&mut g, owner);
    let r = c
        .request(Request::PostGroup {
            post_id: post_id(),
            group_id: id.clone(),
            message: c0,
            added: vec![member.key()],
            removed: vec![],
        })
        .await;
    assert_eq!(r, Ok(Response::Accepted { seq: 1, epoch: 1 }));
    (g, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_racing_through_two_processes_for_one_epoch_have_exactly_one_winner() {
    const ROUNDS: u64 = 40;
    let one = Relay::start();
    let two = one.sibling();
    assert_eq!(one.url, two.url, "one public URL for both processes");
    let alice = Device::new(&one.address("alice"));
    let bob = Device::new(&one.address("bob"));
    // Alice on process 1, Bob on process 2.
    let mut a = Client::registered(one.addr, &alice).await;
    let mut b = Client::registered(two.addr, &bob).await;
    // Bob joins the access list with the first commit.
    let (mut g, id) = group_with(&mut a, &alice, &bob).await;
    let mut wins = [0u32; 2];
    for round in 0..ROUNDS {
        let epoch = round + 1;
        // Two different commits for the same epoch (the relay reads the epoch from the
        // MLS framing).
        let first = mls::self_update(&mut g, &alice);
        g.clear_pending_commit(openmls::prelude::OpenMlsProvider::storage(&alice.provider))
            .expect("clear pending commit");
        let second = mls::self_update(&mut g, &alice);
        mls::merge(&mut g, &alice);
        let post = |message| Request::PostGroup {
            post_id: post_id(),
            group_id: id.clone(),
            message,
            added: vec![],
            removed: vec![],
        };
        let (ra, rb) = tokio::join!(a.request(post(first)), b.request(post(second)));
        let won = |r: &Result<Response, _>| matches!(r, Ok(Response::Accepted { epoch: e, .. }) if *e == epoch + 1);
        let lost = |r: &Result<Response, sotto_protocol::relay::RelayError>| matches!(r, Err(e) if e.kind == RelayErrorKind::Conflict { current_epoch: epoch + 1, head_seq: epoch + 1 });
        match (won(&ra), won(&rb)) {
            (true, false) => {
                assert!(
                    lost(&rb),
                    "round {round}: the loser gets the conflict: {rb:?}"
                );
                wins[0] += 1;
            }
            (false, true) => {
                assert!(
                    lost(&ra),
                    "round {round}: the loser gets the conflict: {ra:?}"
                );
                wins[1] += 1;
            }
            _ => panic!("round {round}: exactly one commit wins each epoch: {ra:?} / {rb:?}"),
        }
    }
    println!(
        "epoch races won: process 1 {}, process 2 {}",
        wins[0], wins[1]
    );
    let state = a
        .request(Request::GroupInfo {
            group_id: id.clone(),
        })
        .await;
    let Ok(Response::Group(state)) = state else {
        panic!("group info: {state:?}")
    };
    assert_eq!((state.epoch, state.head_seq), (ROUNDS + 1, ROUNDS + 1));
    // Both processes read the same log: one entry per epoch, no holes (Bob reads from
    // the commit that added him).
    for (c, from) in [(&mut a, 1), (&mut b, 2)] {
        let r = c
            .request(Request::ReadGroup {
                group_id: id.clone(),
                after: 0,
                limit: 1000,
            })
            .await;
        let Ok(Response::GroupEntries { entries, .. }) = r else {
            panic!("read: {r:?}")
        };
        let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (from..=ROUNDS + 1).collect::<Vec<_>>());
        let epochs: Vec<u64> = entries.iter().map(|e| e.epoch).collect();
        assert_eq!(epochs, (from - 1..=ROUNDS).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_through_two_processes_hand_each_package_out_once() {
    const PACKAGES: usize = 24;
    const CLAIMERS: usize = 4;
    const CLAIMS_EACH: usize = 9;
    let one = Relay::start();
    let two = one.sibling();
    let bob = Device::new(&one.address("bob"));
    let mut b = Client::registered(one.addr, &bob).await;
    let packages: Vec<Vec<u8>> = (0..PACKAGES).map(|_| kp(&bob)).collect();
    let r = b
        .request(Request::PublishKeyPackages {
            ciphersuite: CS_ID,
            key_packages: packages.clone(),
            last_resort: Some(last_resort(&bob)),
        })
        .await;
    assert!(r.is_ok(), "publish: {r:?}");
    let mut tasks = Vec::new();
    for i in 0..CLAIMERS {
        let addr = if i % 2 == 0 { one.addr } else { two.addr };
        let claimer = Device::new(&one.address(&format!("claimer{i}")));
        let target = bob.device_ref();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::registered(addr, &claimer).await;
            // All claims of one claimer in flight at once.
            let mut ids = Vec::new();
            for _ in 0..CLAIMS_EACH {
                ids.push(
                    c.send(Request::ClaimKeyPackage {
                        device: target.clone(),
                        ciphersuite: CS_ID,
                    })
                    .await,
                );
            }
            let mut got = Vec::new();
            for id in ids {
                match c.response(id).await {
                    Ok(Response::KeyPackage(k)) => got.push((k.key_package, k.last_resort)),
                    other => panic!("claim: {other:?}"),
                }
            }
            got
        }));
    }
    let mut single = Vec::new();
    let mut fallback = 0;
    for t in tasks {
        for (kp, last) in t.await.expect("claimer") {
            if last {
                fallback += 1;
            } else {
                single.push(kp);
            }
        }
    }
    let distinct: HashSet<&Vec<u8>> = single.iter().collect();
    assert_eq!(
        distinct.len(),
        single.len(),
        "a single-use package was handed out twice"
    );
    assert_eq!(
        single.len(),
        PACKAGES,
        "every single-use package was handed out"
    );
    assert!(distinct.iter().all(|k| packages.contains(k)));
    assert_eq!(fallback, CLAIMERS * CLAIMS_EACH - PACKAGES);
    assert_eq!(
        one.count("SELECT COUNT(*) FROM key_packages WHERE NOT last_resort"),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_through_one_process_are_pushed_to_members_on_the_other() {
    const POSTS: usize = 60;
    let one = Relay::start();
    let two = one.sibling();
    let alice = Device::new(&one.address("alice"));
    let carol = Device::new(&one.address("carol"));
    let mut a = Client::registered(one.addr, &alice).await;
    let mut c = Client::registered(two.addr, &carol).await;
    // A group log: Carol (on process 2) subscribes; Alice (on process 1) posts.
    let (mut g, id) = group_with(&mut a, &alice, &carol).await;
    let sub = Request::SubscribeGroup {
        group_id: id.clone(),
        after: 1,
    };
    assert_eq!(c.request(sub).await, Ok(Response::Ok));
    c.subscribe_mailbox(&carol, 0).await;
    let mut latencies = Vec::new();
    for i in 0..POSTS {
        let started = Instant::now();
        let (seq, mailbox) = if i % 2 == 0 {
            let msg = mls::app_message(&mut g, &alice, format!("m{i}").as_bytes());
            let r = mls::post(&mut a, &g, msg, vec![], vec![]).await;
            let Ok(Response::Accepted { seq, .. }) = r else {
                panic!("post: {r:?}")
            };
            (seq, false)
        } else {
            let r = a
                .request(Request::PostMailbox {
                    post_id: post_id(),
                    recipients: vec![carol.device_ref()],
                    payload: vec![i as u8; 64],
                })
                .await;
            let Ok(Response::Posted { seqs }) = r else {
                panic!("post: {r:?}")
            };
            (seqs[0], true)
        };
        loop {
            let push = tokio::time::timeout(DEADLINE, c.push())
                .await
                .expect("pushed across processes");
            let found = match push {
                Push::Group { entries, .. } if !mailbox => entries.iter().any(|e| e.seq == seq),
                Push::Mailbox { entries } if mailbox => entries.iter().any(|e| e.seq == seq),
                _ => false,
            };
            if found {
                break;
            }
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "cross-process push (post acknowledged + pushed): p50 {:?} p99 {:?} max {:?}",
        p(0.5),
        p(0.99),
        latencies[latencies.len() - 1]
    );
    assert!(two.metric("sotto_relay_db_notifications_total") > 0);
}

fn migrate(url: &str) -> std::process::Output {
    std::process::Command::new(bin())
        .args(["migrate", "--database", url])
        .output()
        .expect("run sotto-relay migrate")
}

#[test]
fn migrate_is_idempotent_needs_no_listen_and_refuses_a_newer_schema() {
    let cluster = crate::pg::shared();
    let url = cluster.create_database().expect("create a database");
    let db = url
        .rsplit('/')
        .next()
        .and_then(|d| d.split('?').next())
        .expect("db");
    let mut versions = Vec::new();
    for _ in 0..2 {
        let out = migrate(&url);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let version: u32 = text
            .split("schema version ")
            .nth(1)
            .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no schema version in {text:?}"));
        versions.push(version);
    }
    // The second run applies nothing: the same version, one row per migration.
    assert_eq!(versions[0], versions[1]);
    assert!(versions[0] >= 3, "{versions:?}");
    assert_eq!(
        cluster
            .psql(db, "SELECT count(*) FROM sotto_schema")
            .expect("psql"),
        versions[0].to_string()
    );
    cluster
        .psql(db, "INSERT INTO sotto_schema (version) VALUES (99)")
        .expect("psql");
    let out = migrate(&url);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("schema version 99") && err.contains("upgrade sotto-relay"),
        "{err}"
    );
    // A relay refuses to start on it too, and says why.
    let out = std::process::Command::new(bin())
        .args(["--listen", "127.0.0.1:0", "--database", &url])
        .output()
        .expect("run sotto-relay");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("schema version 99"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A bad URL is refused before anything is touched, without echoing the password.
    let out = migrate("postgres://u:hunter2@127.0.0.1:1/x?sslmode=sometimes");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sslmode") && !err.contains("hunter2"), "{err}");
}

async fn status(relay_addr: std::net::SocketAddr) -> String {
    tokio::task::spawn_blocking(move || crate::harness::http_get(relay_addr, "/healthz").0)
        .await
        .expect("healthz")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_load_loses_nothing_and_healthz_goes_503_and_back() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    // Its own cluster: this test stops the server.
    let cluster = crate::pg::Cluster::start().expect("start a PostgreSQL cluster");
    let url = cluster.create_database().expect("create a database");
    let relay = Relay::start_with(&["--database", &url, "--mailbox-posts-per-min", "1000000"]);
    let alice = Device::new(&relay.address("alice"));
    let bob = Device::new(&relay.address("bob"));
    drop(Client::registered(relay.addr, &bob).await);
    let mut a = Client::registered(relay.addr, &alice).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, acked, target) = (Arc::clone(&stop), Arc::clone(&acked), bob.device_ref());
        tokio::spawn(async move {
            let mut retryable = 0u32;
            let mut slowest_refusal = std::time::Duration::ZERO;
            let mut i: u32 = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = post_id();
                // The same post until acknowledged, as a daemon retries.
                loop {
                    let started = Instant::now();
                    let r = a
                        .request(Request::PostMailbox {
                            post_id: id,
                            recipients: vec![target.clone()],
                            payload: i.to_be_bytes().to_vec(),
                        })
                        .await;
                    match r {
                        Ok(Response::Posted { .. }) => break,
                        Err(e) if matches!(e.kind, RelayErrorKind::RateLimited { .. }) => {
                            retryable += 1;
                            slowest_refusal = slowest_refusal.max(started.elapsed());
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        }
                        other => panic!("post {i}: {other:?}"),
                    }
                }
                acked.store(i as usize + 1, Ordering::Relaxed);
                i += 1;
            }
            (i, retryable, slowest_refusal)
        })
    };
    let wait_acked = |n: usize| {
        let acked = Arc::clone(&acked);
        async move {
            crate::harness::eventually("acknowledged posts", async || {
                (acked.load(Ordering::Relaxed) >= n).then_some(())
            })
            .await
        }
    };
    wait_acked(50).await;
    assert_eq!(status(relay.addr).await, "HTTP/1.1 200 OK");
    cluster.stop_server().expect("stop postgres");
    let down = Instant::now();
    let unhealthy_after = loop {
        if status(relay.addr).await.contains("503") {
            break down.elapsed();
        }
        assert!(down.elapsed() < DEADLINE, "healthz never went unhealthy");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let during = acked.load(Ordering::Relaxed);
    // A few seconds down, under load.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    cluster.start_server().expect("start postgres");
    let up = Instant::now();
    let healthy_after = loop {
        if status(relay.addr).await.contains("200") {
            break up.elapsed();
        }
        assert!(up.elapsed() < DEADLINE, "healthz never recovered");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // The same client connection carries on by itself.
    wait_acked(during + 50).await;
    stop.store(true, Ordering::Relaxed);
    let (sent, retryable, slowest) = writer.await.expect("writer");
    println!(
        "outage: /healthz 503 after {unhealthy_after:?}, 200 again {healthy_after:?} after restart; \
         {retryable} retryable refusals, slowest {slowest:?}; {sent} posts acknowledged"
    );
    assert!(
        unhealthy_after < std::time::Duration::from_secs(10),
        "503 within 10 s"
    );
    assert!(
        retryable > 0,
        "posts during the outage were refused as retryable"
    );
    assert!(
        slowest < std::time::Duration::from_secs(10),
        "refusals come within a bounded time"
    );
    // Every acknowledged post is stored exactly once, in order.
    let mut b = Client::authenticated(relay.addr, &bob).await;
    let mut got = Vec::new();
    b.subscribe_mailbox(&bob, 0).await;
    while got.len() < sent as usize {
        let Push::Mailbox { entries } = tokio::time::timeout(DEADLINE, b.push())
            .await
            .expect("mailbox push")
        else {
            continue;
        };
        for e in entries {
            got.push(u32::from_be_bytes(
                e.payload[..4].try_into().expect("4 bytes"),
            ));
        }
    }
    assert_eq!(
        got,
        (0..sent).collect::<Vec<_>>(),
        "each acknowledged post once, in order"
    );
    assert!(relay.metric("sotto_relay_db_errors_total") > 0);
    drop(cluster);
}

/// The per-principal claim limits are one budget across processes: a claimer spreading
/// its claims over two processes gets no more than it would from one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_limits_are_shared_by_the_processes() {
    const PER_MIN: usize = 4;
    let one = Relay::start_with(&["--claims-per-min", &PER_MIN.to_string()]);
    let two = one.sibling();
    let bob = Device::new(&one.address("bob"));
    let mut b = Client::registered(one.addr, &bob).await;
    let r = b
        .request(Request::PublishKeyPackages {
            ciphersuite: CS_ID,
            key_packages: vec![],
            last_resort: Some(last_resort(&bob)),
        })
        .await;
    assert!(matches!(r, Ok(Response::KeyPackageCount(_))), "{r:?}");
    let eve = Device::new("eve@elsewhere.example");
    let mut via_one = Client::authenticated(one.addr, &eve).await;
    let mut via_two = Client::authenticated(two.addr, &eve).await;
    let claim = Request::ClaimKeyPackage {
        device: bob.device_ref(),
        ciphersuite: CS_ID,
    };
    let (mut granted, mut refused) = (0, 0);
    for i in 0..3 * PER_MIN {
        let c = if i % 2 == 0 {
            &mut via_one
        } else {
            &mut via_two
        };
        match c.request(claim.clone()).await {
            Ok(Response::KeyPackage(_)) => granted += 1,
            Err(e) if matches!(e.kind, RelayErrorKind::RateLimited { retry_after_ms } if retry_after_ms > 0) => {
                refused += 1
            }
            other => panic!("claim {i}: {other:?}"),
        }
    }
    // The burst is PER_MIN; at PER_MIN a minute at most one more token can have refilled
    // while the test ran. Per-process buckets would have granted 2 × PER_MIN.
    assert!(
        (PER_MIN..=PER_MIN + 1).contains(&granted),
        "granted {granted}, refused {refused}"
    );
    assert_eq!(granted + refused, 3 * PER_MIN);
    assert_eq!(
        one.count("SELECT COUNT(*) FROM rate_buckets WHERE bucket = 'claims_by_claimer'"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_through_one_process_closes_the_old_install_on_the_other() {
    let one = Relay::start();
    let two = one.sibling();
    let alice = Device::new(&one.address("alice"));
    let mut old = Client::registered(one.addr, &alice).await;
    old.subscribe_mailbox(&alice, 0).await;
    let start = Instant::now();
    drop(Client::registered(two.addr, &alice.restored()).await);
    // The NOTIFY of the takeover reaches process one, which closes the old connection.
    let e = old.fatal().await;
    assert_eq!(e.kind, RelayErrorKind::SessionRevoked);
    println!("cross-process revocation: {:?}", start.elapsed());
    // And process one refuses the old install from then on.
    let mut c = Client::connect(one.addr).await;
    assert_eq!(
        crate::client::kind(c.try_auth(&alice, true).await),
        RelayErrorKind::SessionRevoked
    );
}

/// `?sslmode=require`: the relay's pool talks TLS (rustls) to a server that offers it —
/// PostgreSQL itself reports every connection of the relay's database as encrypted — and
/// refuses, clearly, a server that does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_encrypts_and_refuses_a_plain_server() {
    // Its own cluster: TLS is switched on for it alone.
    let cluster = crate::pg::Cluster::start().expect("start a PostgreSQL cluster");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])
        .expect("self-signed certificate");
    let crt = cluster
        .write_private("server.crt", certified.cert.pem().as_bytes())
        .expect("write a server file");
    let key = cluster
        .write_private(
            "server.key",
            certified.signing_key.serialize_pem().as_bytes(),
        )
        .expect("write a server file");
    for sql in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", crt.display()),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
        "ALTER SYSTEM SET ssl = on".to_owned(),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        cluster.psql("postgres", &sql).expect("psql");
    }
    crate::harness::eventually("the server to offer TLS", async || {
        (cluster.psql("postgres", "SHOW ssl").expect("psql") == "on").then_some(())
    })
    .await;
    let url = cluster.create_database().expect("create a database");
    let db = url
        .rsplit('/')
        .next()
        .and_then(|d| d.split('?').next())
        .expect("db")
        .to_owned();
    let url = url.replace("sslmode=disable", "sslmode=require");
    let relay = Relay::start_with(&["--database", &url]);
    // A real round trip through the encrypted pool.
    let alice = Device::new(&relay.address("alice"));
    let mut a = Client::registered(relay.addr, &alice).await;
    let r = a
        .request(Request::PublishKeyPackages {
            ciphersuite: CS_ID,
            key_packages: vec![kp(&alice)],
            last_resort: Some(last_resort(&alice)),
        })
        .await;
    assert!(matches!(r, Ok(Response::KeyPackageCount(_))), "{r:?}");
    let encrypted = cluster
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_ssl s
             JOIN pg_stat_activity a USING (pid) WHERE a.datname = '{db}'"
            ),
        )
        .expect("psql");
    let (tls, all) = encrypted.split_once('|').expect("two counts");
    assert!(all.parse::<u32>().unwrap() >= 1, "the relay is connected");
    assert_eq!(tls, all, "every connection of the relay is TLS");
    drop(a);
    drop(relay);

    // A server without TLS (the shared cluster) is refused under `require`.
    let plain = crate::pg::shared()
        .create_database()
        .expect("create a database")
        .replace("sslmode=disable", "sslmode=require");
    let out = migrate(&plain);
    assert!(!out.status.success(), "migrate over a plain connection");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("tls") || err.contains("ssl"), "{err}");
}
