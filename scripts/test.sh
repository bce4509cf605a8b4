#!/usr/bin/env bash
# The whole test suite: system packages, then every crate's unit and integration tests.
# Integration tests start their own processes: private dbus-daemons with gnome-keyring,
# real sottod and sotto-relay binaries on temp dirs. Nothing touches your own session.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo build --workspace --all-targets --locked
cargo test --workspace --locked --no-fail-fast "$@"
# The fuzz targets in fuzz/, a few seconds each (scripts/fuzz.sh --long runs them for hours;
# SOTTO_SKIP_FUZZ=1 skips them).
[ "${SOTTO_SKIP_FUZZ:-}" = 1 ] || scripts/fuzz.sh
