#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for a few seconds each: the
# smoke run of scripts/test.sh. `scripts/fuzz.sh --long [SECONDS]` runs each target for
# SECONDS (default 3600); `scripts/fuzz.sh --long 3600 relay_stream` runs only the named ones.
# `--mls` (first) adds the targets over the daemon's MLS handling (mls_group_entry,
# mls_welcome): they build the whole daemon with coverage instrumentation (about eight
# times the CPU of the other targets' build), so the smoke run leaves them out; their kept
# inputs and seeded mutations of them run in every `cargo test` (sottod's
# engine::fuzzing tests). Naming an mls_* target implies --mls.
# Only a stable toolchain is installed here: RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's
# nightly flags. New inputs libFuzzer finds go to fuzz/target/corpus-new/<target> (not
# kept); the seeds in fuzz/corpus/<target> and the crashers in fuzz/regressions/<target>
# replay under `cargo test` (sotto-protocol's fuzz_corpus test; sottod's for mls_*).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

mls=${FUZZ_MLS:-0}
if [ "${1:-}" = "--mls" ]; then
  mls=1
  shift
fi
secs=${FUZZ_SECONDS:-4}
if [ "${1:-}" = "--long" ]; then
  secs=${2:-3600}
  shift $(( $# >= 2 ? 2 : 1 ))
fi
for t in "$@"; do
  case "$t" in mls_*) mls=1 ;; esac
done
features=()
[ "$mls" = 1 ] && features=(--features mls)
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz (once)"
  cargo install cargo-fuzz --locked
fi
sanitizer=${FUZZ_SANITIZER:-none}
cargo fuzz build --sanitizer "$sanitizer" --debug-assertions "${features[@]}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list | { if [ "$mls" = 1 ]; then cat; else grep -v '^mls_'; fi; })
fi
for t in "${targets[@]}"; do
  mkdir -p "target/corpus-new/$t" "corpus/$t" "regressions/$t"
  echo "fuzz: $t for ${secs}s"
  if ! cargo fuzz run --sanitizer "$sanitizer" --debug-assertions "${features[@]}" "$t" \
      "target/corpus-new/$t" "corpus/$t" "regressions/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
      2> "target/$t.log"; then
    tail -n 40 "target/$t.log"
    echo "fuzz: $t found a crash; keep the input (fuzz/artifacts/$t/) in fuzz/regressions/$t/ with the fix" >&2
    exit 1
  fi
  grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "target/$t.log" | tail -n 2 || true
done
