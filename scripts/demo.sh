#!/usr/bin/env bash
# Sotto's main job on embedded defaults, in throwaway directories: a daemon holding a real
# identity key in a real key store (a private gnome-keyring when available, else the
# explicit file store), driven by the real CLI.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cargo build --workspace --quiet
bin="$PWD/target/debug"
demo=$(mktemp -d -t sotto-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$demo"
}
trap cleanup EXIT

mkdir -p "$demo"/{run,data,config,home,keyring}
chmod 700 "$demo"/run
export HOME="$demo/home" XDG_RUNTIME_DIR="$demo/run" XDG_DATA_HOME="$demo/data" XDG_CONFIG_HOME="$demo/config"

if command -v gnome-keyring-daemon >/dev/null && command -v dbus-daemon >/dev/null; then
  dbus-daemon --session --nofork --nopidfile --print-address=1 --address="unix:path=$demo/bus" >"$demo/bus.addr" &
  pids+=($!)
  for _ in $(seq 100); do [ -s "$demo/bus.addr" ] && break; sleep 0.05; done
  export DBUS_SESSION_BUS_ADDRESS=$(head -1 "$demo/bus.addr")
  printf %s demo-password | gnome-keyring-daemon --foreground --unlock --components=secrets >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    dbus-send --bus="$DBUS_SESSION_BUS_ADDRESS" --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
      org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets 2>/dev/null | grep -q true && break
    sleep 0.05
  done
  export SOTTO_KEY_STORE=secret-service
  echo "== key store: a private gnome-keyring (Secret Service)"
else
  export SOTTO_KEY_STORE=file
  echo "== key store: file (no Secret Service on this machine)"
fi

"$bin/sottod" 2>"$demo/sottod.log" &
pids+=($!)
for _ in $(seq 200); do "$bin/sotto" status >/dev/null 2>&1 && break; sleep 0.05; done

echo "== sotto status"
"$bin/sotto" status
echo "== sotto account create --relay 127.0.0.1:7070 alice"
"$bin/sotto" account create --relay 127.0.0.1:7070 alice
echo "== sotto whoami"
"$bin/sotto" whoami
echo "== sotto status --json"
"$bin/sotto" --json status
echo "== sotto listen --since 0 (the persisted event log)"
timeout 1 "$bin/sotto" listen --since 0 2>/dev/null || true
"$bin/sotto" --json status >/dev/null
kill -TERM "${pids[-1]}"
wait "${pids[-1]}" 2>/dev/null || true
echo "== sottod stopped; its log:"
cat "$demo/sottod.log"
