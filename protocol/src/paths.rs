//! Where the socket is, computed from the environment's values (no I/O here: callers pass
//! the values in, so the daemon and every client agree on one rule).

use std::path::PathBuf;

/// The environment variable that overrides the socket path.
pub const SOCKET_ENV: &str = "SOTTO_SOCKET";
/// The socket's file name inside its directory.
pub const SOCKET_FILE: &str = "sottod.sock";

/// The default socket path: `$XDG_RUNTIME_DIR/sotto/sottod.sock`, or
/// `/tmp/sotto-$UID/sottod.sock` when there is no runtime dir.
pub fn default_socket(xdg_runtime_dir: Option<&str>, uid: u32) -> PathBuf {
    match xdg_runtime_dir.filter(|d| !d.is_empty() && d.starts_with('/')) {
        Some(dir) => PathBuf::from(dir).join("sotto").join(SOCKET_FILE),
        None => PathBuf::from(format!("/tmp/sotto-{uid}")).join(SOCKET_FILE),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn socket_paths() {
        assert_eq!(
            super::default_socket(Some("/run/user/1000"), 1000).to_str(),
            Some("/run/user/1000/sotto/sottod.sock")
        );
        assert_eq!(
            super::default_socket(None, 42).to_str(),
            Some("/tmp/sotto-42/sottod.sock")
        );
        assert_eq!(
            super::default_socket(Some("relative"), 7).to_str(),
            Some("/tmp/sotto-7/sottod.sock")
        );
    }
}
