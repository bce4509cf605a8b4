//! 9. The cost of post-quantum conversations: the ML-KEM-768 + X25519 hybrid (0x004F)
//!    beside the default 0x0001, same code, same run. For N members: a key package (build
//!    time, size), create + add N-1 in one commit (time, commit and Welcome sizes), a
//!    member joining from the Welcome, a self-update (time, commit size) and a member
//!    processing it, one 1 KiB message encrypted and decrypted. In-memory openmls
//!    providers with sottod's group config and capabilities, so the figures are the MLS
//!    cost alone; the end-to-end 100-member PQ group runs in the daemon's tests
//!    (`postquantum::a_hundred_member_post_quantum_group_is_created_and_joined`).

use std::time::{Duration, Instant};

use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use sottod::mls as smls;

use super::Ctx;
use crate::progress;
use crate::relay_client::Device;
use crate::report::{Row, ratio};
use crate::stats::{fmt_bytes, fmt_us};

/// What one suite costs for one group size.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    key_package: Duration,
    key_package_bytes: usize,
    create_add: Duration,
    add_commit_bytes: usize,
    welcome_bytes: usize,
    join: Duration,
    update: Duration,
    update_commit_bytes: usize,
    process: Duration,
    message: Duration,
}

fn protocol(bytes: &[u8]) -> anyhow::Result<ProtocolMessage> {
    Ok(MlsMessageIn::tls_deserialize_exact(bytes)?.try_into_protocol_message()?)
}

fn key_package(dev: &Device, suite: Ciphersuite) -> anyhow::Result<KeyPackage> {
    Ok(KeyPackage::builder()
        .leaf_node_capabilities(smls::capabilities())
        .build(suite, &dev.provider, &dev.signer, dev.credential())?
        .key_package()
        .clone())
}

fn measure(suite: Ciphersuite, n: usize) -> anyhow::Result<Figures> {
    let mut f = Figures::default();
    let creator = Device::new("creator@bench.invalid");
    let members: Vec<Device> = (1..n)
        .map(|i| Device::new(&format!("m{i}@bench.invalid")))
        .collect();
    let t = Instant::now();
    let packages = members
        .iter()
        .map(|m| key_package(m, suite))
        .collect::<anyhow::Result<Vec<_>>>()?;
    f.key_package = t.elapsed() / u32::try_from(packages.len().max(1))?;
    f.key_package_bytes = packages
        .first()
        .map(|k| k.tls_serialize_detached().map(|b| b.len()))
        .transpose()?
        .unwrap_or(0);

    let t = Instant::now();
    let mut group = MlsGroup::builder()
        .ciphersuite(suite)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(smls::MAX_PAST_EPOCHS)
        .with_wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .with_capabilities(smls::capabilities())
        .with_group_context_extensions(smls::name_extensions(Some("bench")))
        .build(&creator.provider, &creator.signer, creator.credential())?;
    let (commit, welcome, _) = group.add_members(&creator.provider, &creator.signer, &packages)?;
    group.merge_pending_commit(&creator.provider)?;
    f.create_add = t.elapsed();
    f.add_commit_bytes = commit.tls_serialize_detached()?.len();
    let welcome = welcome.tls_serialize_detached()?;
    f.welcome_bytes = welcome.len();

    let joiner = members.first().ok_or_else(|| anyhow::anyhow!("n < 2"))?;
    let t = Instant::now();
    let MlsMessageBodyIn::Welcome(w) = MlsMessageIn::tls_deserialize_exact(&welcome)?.extract()
    else {
        anyhow::bail!("not a Welcome")
    };
    let mut joined =
        StagedWelcome::new_from_welcome(&joiner.provider, &smls::join_config(), w, None)?
            .into_group(&joiner.provider)?;
    f.join = t.elapsed();

    let t = Instant::now();
    let bundle = group.self_update(
        &creator.provider,
        &creator.signer,
        LeafNodeParameters::default(),
    )?;
    let update = bundle.commit().tls_serialize_detached()?;
    group.merge_pending_commit(&creator.provider)?;
    f.update = t.elapsed();
    f.update_commit_bytes = update.len();

    let t = Instant::now();
    let processed = joined.process_message(&joiner.provider, protocol(&update)?)?;
    let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
        anyhow::bail!("expected a commit")
    };
    joined.merge_staged_commit(&joiner.provider, *staged)?;
    f.process = t.elapsed();

    let t = Instant::now();
    let m = group
        .create_message(&creator.provider, &creator.signer, &[b'x'; 1024])?
        .tls_serialize_detached()?;
    let processed = joined.process_message(&joiner.provider, protocol(&m)?)?;
    anyhow::ensure!(
        matches!(
            processed.into_content(),
            ProcessedMessageContent::ApplicationMessage(_)
        ),
        "expected an application message"
    );
    f.message = t.elapsed();
    Ok(f)
}

/// The median figures of `reps` runs (sizes do not vary).
fn median(runs: &mut [Figures]) -> Figures {
    let mid = runs.len() / 2;
    let pick = |runs: &mut [Figures], key: fn(&Figures) -> Duration| {
        runs.sort_by_key(key);
        key(&runs[mid])
    };
    let mut out = runs[0];
    out.key_package = pick(runs, |f| f.key_package);
    out.create_add = pick(runs, |f| f.create_add);
    out.join = pick(runs, |f| f.join);
    out.update = pick(runs, |f| f.update);
    out.process = pick(runs, |f| f.process);
    out.message = pick(runs, |f| f.message);
    out
}

fn time_row(what: String, pq: Duration, classic: Duration) -> Row {
    Row::new(what, fmt_us(pq.as_secs_f64() * 1e6)).baseline(
        format!("{} (0x0001)", fmt_us(classic.as_secs_f64() * 1e6)),
        ratio(pq.as_secs_f64(), classic.as_secs_f64()),
    )
}

fn size_row(what: String, pq: usize, classic: usize) -> Row {
    Row::new(what, fmt_bytes(pq as f64)).baseline(
        format!("{} (0x0001)", fmt_bytes(classic as f64)),
        ratio(pq as f64, classic as f64),
    )
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Vec<Row>> {
    let sizes: &[(usize, usize)] = ctx.pick(&[(10, 3), (100, 1)], &[(10, 7), (100, 5), (1000, 1)]);
    let mut rows = Vec::new();
    for &(n, reps) in sizes {
        progress!("post-quantum cost, N={n}: {reps} run(s) each of 0x004F and 0x0001");
        let [pq, classic] = tokio::task::spawn_blocking(move || {
            let mut out = [Figures::default(); 2];
            for (slot, suite) in out
                .iter_mut()
                .zip([smls::PQ_CIPHERSUITE, smls::DEFAULT_CIPHERSUITE])
            {
                let mut runs = (0..reps)
                    .map(|_| measure(suite, n))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                *slot = median(&mut runs);
            }
            Ok::<_, anyhow::Error>(out)
        })
        .await??;
        let p = |s: &str| format!("9 PQ N={n} {s}");
        if n == sizes[0].0 {
            rows.push(time_row(
                "9 PQ key package (build)".into(),
                pq.key_package,
                classic.key_package,
            ));
            rows.push(size_row(
                "9 PQ key package (size)".into(),
                pq.key_package_bytes,
                classic.key_package_bytes,
            ));
            rows.push(time_row(
                "9 PQ 1 KiB message (encrypt + decrypt)".into(),
                pq.message,
                classic.message,
            ));
        }
        rows.push(time_row(
            p(&format!("create + add {} (one commit)", n - 1)),
            pq.create_add,
            classic.create_add,
        ));
        rows.push(size_row(
            p("add commit"),
            pq.add_commit_bytes,
            classic.add_commit_bytes,
        ));
        rows.push(size_row(
            p("Welcome"),
            pq.welcome_bytes,
            classic.welcome_bytes,
        ));
        rows.push(time_row(p("join from the Welcome"), pq.join, classic.join));
        rows.push(time_row(p("self-update"), pq.update, classic.update));
        rows.push(size_row(
            p("self-update commit"),
            pq.update_commit_bytes,
            classic.update_commit_bytes,
        ));
        rows.push(time_row(p("process a commit"), pq.process, classic.process));
    }
    Ok(rows)
}
