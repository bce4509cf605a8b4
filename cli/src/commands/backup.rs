//! `sotto backup export|import`

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use sotto_protocol::methods::{BackupExport, BackupImport, BackupParams};

use crate::Ctx;
use crate::output::print_json;

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Write everything this install holds to one passphrase-encrypted file
    ///
    /// The device key, a consistent snapshot of the database (history, contacts, MLS
    /// state) and config.toml, in an age file encrypted under the passphrase (scrypt):
    /// `age -d FILE | tar t` lists it. The passphrase is asked for twice without echo,
    /// or read from the first line of --passphrase-file. Anyone with the file and the
    /// passphrase can take this account over: keep both apart.
    ///
    /// Example: sotto backup export ~/sotto-backup.age
    Export {
        /// The backup file to write (replaced if it exists)
        path: PathBuf,
        /// Read the passphrase from the first line of FILE instead of asking
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Restore a backup on a daemon without an account, and take the account over
    ///
    /// The restored install registers a fresh install id with the home relay, which
    /// cuts the old install off at once (it reports `account.state = revoked`).
    ///
    /// Example: sotto backup import ~/sotto-backup.age
    Import {
        /// The backup file
        path: PathBuf,
        /// Read the passphrase from the first line of FILE instead of asking
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
}

/// The first line of `file`, without its line ending.
fn passphrase_from_file(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the passphrase file {}", file.display()))?;
    let line = text.lines().next().unwrap_or("");
    let line = line.strip_suffix('\r').unwrap_or(line);
    anyhow::ensure!(
        !line.is_empty(),
        "the passphrase file {} is empty",
        file.display()
    );
    Ok(line.to_owned())
}

fn prompt(confirm: bool) -> anyhow::Result<String> {
    let first = rpassword::prompt_password("Backup passphrase: ")
        .context("cannot read the passphrase (no terminal? use --passphrase-file)")?;
    anyhow::ensure!(!first.is_empty(), "the passphrase is empty");
    if confirm {
        let again = rpassword::prompt_password("Again: ").context("cannot read the passphrase")?;
        anyhow::ensure!(first == again, "the passphrases differ");
    }
    Ok(first)
}

fn absolute(path: PathBuf) -> anyhow::Result<String> {
    let path = if path.is_absolute() {
        path
    } else {
        std::env::current_dir()
            .context("the current directory")?
            .join(path)
    };
    path.to_str()
        .map(str::to_owned)
        .context("the backup path is not UTF-8")
}

pub fn run(ctx: &Ctx, cmd: BackupCommand) -> anyhow::Result<()> {
    match cmd {
        BackupCommand::Export {
            path,
            passphrase_file,
        } => {
            let passphrase = match passphrase_file {
                Some(f) => passphrase_from_file(&f)?,
                None => prompt(true)?,
            };
            let mut client = super::connect(ctx)?;
            let info = client.call::<BackupExport>(&BackupParams {
                path: absolute(path)?,
                passphrase,
            })?;
            if ctx.json {
                return print_json(&info);
            }
            println!(
                "wrote {} ({} bytes, snapshot of {})",
                info.path, info.bytes, info.created_at
            );
            Ok(())
        }
        BackupCommand::Import {
            path,
            passphrase_file,
        } => {
            let passphrase = match passphrase_file {
                Some(f) => passphrase_from_file(&f)?,
                None => prompt(false)?,
            };
            let mut client = super::connect(ctx)?;
            let account = client.call::<BackupImport>(&BackupParams {
                path: absolute(path)?,
                passphrase,
            })?;
            if ctx.json {
                return print_json(&account);
            }
            println!(
                "restored {}; this install now holds the account",
                account.address
            );
            super::whoami::print_account(&account);
            Ok(())
        }
    }
}
