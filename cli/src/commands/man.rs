//! `sotto man [--dir DIR]`: sotto(1), one page per subcommand (sotto-send(1), …) and the
//! protocol pages sotto-jsonrpc(7) and sotto-dbus(7). Without `--dir`, sotto(1) on stdout.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, CommandFactory as _};

/// The hand-written section 7 pages, for people writing clients.
const PROTOCOL_PAGES: &[(&str, &str)] = &[
    (
        "sotto-jsonrpc.7",
        include_str!("../../../docs/man/sotto-jsonrpc.7"),
    ),
    (
        "sotto-dbus.7",
        include_str!("../../../docs/man/sotto-dbus.7"),
    ),
];

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write every page into DIR (created if missing) instead of printing sotto(1)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// What sotto(1) adds to the generated page.
const SOTTO_EXTRA: &str = r#".SH ENVIRONMENT
.TP
\fBSOTTO_SOCKET\fR
The daemon's socket, like \fB\-\-socket\fR.
.TP
\fBXDG_RUNTIME_DIR\fR
The default socket is \fI$XDG_RUNTIME_DIR/sotto/sottod.sock\fR; without it,
\fI/tmp/sotto\-$UID/sottod.sock\fR.
.SH EXIT STATUS
0 on success, 1 on an error (the message is on standard error), 2 on a usage error.
"#;

fn see_also(name: &str) -> String {
    let mut pages = vec![
        "sottod(8)",
        "sotto\\-relay(8)",
        "sotto\\-jsonrpc(7)",
        "sotto\\-dbus(7)",
    ];
    if name != "sotto" {
        pages.insert(0, "sotto(1)");
    }
    format!(".SH \"SEE ALSO\"\n{}\n", pages.join(", "))
}

fn render(cmd: clap::Command) -> anyhow::Result<Vec<u8>> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .manual("Sotto Manual")
        .render(&mut out)
        .context("rendering a man page")?;
    if name == "sotto" {
        out.extend_from_slice(SOTTO_EXTRA.as_bytes());
    }
    out.extend_from_slice(see_also(&name).as_bytes());
    Ok(out)
}

/// Every command of the tree, the root first; display names are `sotto-contact-add` etc.
fn all_commands() -> Vec<clap::Command> {
    fn walk(cmd: &clap::Command, out: &mut Vec<clap::Command>) {
        out.push(cmd.clone());
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, out);
        }
    }
    let mut root = crate::Cli::command().disable_help_subcommand(true);
    root.build();
    let mut out = Vec::new();
    walk(&root, &mut out);
    out
}

fn write_all(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for cmd in all_commands() {
        let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, render(cmd)?)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    for (file, text) in PROTOCOL_PAGES {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

pub fn run(args: ManArgs) -> anyhow::Result<()> {
    match args.dir {
        Some(dir) => {
            for path in write_all(&dir)? {
                println!("{}", path.display());
            }
        }
        None => {
            let root = all_commands()
                .into_iter()
                .next()
                .context("no root command")?;
            std::io::stdout().write_all(&render(root)?)?;
        }
    }
    Ok(())
}
