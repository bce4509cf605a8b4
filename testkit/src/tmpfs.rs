//! A small tmpfs for the disk-full and read-only tests: mounted at a directory (a data
//! directory of a daemon or a relay), filled to the last byte, freed, remounted read-only.
//! Mounting needs root (or CAP_SYS_ADMIN): the test command runs as root here and in CI.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A small tmpfs mounted at a directory for the disk-full and read-only tests; lazily
/// unmounted on drop (the processes using it may still be running).
#[derive(Debug)]
pub struct Tmpfs {
    /// The mount point.
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"16m"`) at `path` (created if missing), mode 0700.
    /// Mounting needs root (the test command runs as root here and in CI). When it is
    /// impossible the test fails loudly, unless `SOTTO_TEST_SKIP_MOUNT=1` is set: then
    /// it says SKIPPED on stderr and returns `None`.
    pub fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0700"))
            .arg("tmpfs")
            .arg(path)
            .output()
            .expect("run mount (package mount)");
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr).into_owned();
            if std::env::var_os("SOTTO_TEST_SKIP_MOUNT").is_some_and(|v| v == "1") {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs at {} ({why}); this fault test did not run",
                    path.display()
                );
                return None;
            }
            panic!(
                "cannot mount a tmpfs at {} ({why}): this test needs root (or CAP_SYS_ADMIN); set SOTTO_TEST_SKIP_MOUNT=1 to skip it knowingly",
                path.display()
            );
        }
        Some(Tmpfs {
            path: path.to_owned(),
        })
    }

    fn filler(&self) -> PathBuf {
        self.path.join("filler")
    }

    /// Fills the file system to the last byte; returns how many bytes the filler took.
    pub fn fill(&self) -> u64 {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.filler())
            .expect("filler");
        let mut written = 0u64;
        for chunk in [1 << 16, 4096, 512, 1] {
            let buf = vec![0x5au8; chunk];
            while f.write_all(&buf).is_ok() {
                written += chunk as u64;
            }
        }
        let _ = f.sync_all();
        written
    }

    /// Deletes the filler: the space is back.
    pub fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove the filler");
    }

    /// Remounts read-only (`ro`) or read-write.
    pub fn remount(&self, read_only: bool) {
        let mode = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        let out = Command::new("mount")
            .args(["-o", mode])
            .arg(&self.path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -o {mode} {}: {}",
            self.path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
