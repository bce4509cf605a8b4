#!/usr/bin/env bash
# Sotto's main job on embedded defaults, in throwaway directories: a relay (SQLite) and two
# daemons, alice and bob, each holding a real identity key in a real key store (a private
# gnome-keyring when available, else the explicit file store), exchanging messages.
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
  dbus-daemon --session --nofork --nopidfile --print-address=1 --address="unix:path=$demo/bus" >"$demo/bus.addr" 2>/dev/null &
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

# A relay on a free loopback port (SQLite, embedded defaults).
mkdir -p "$demo/relay"
"$bin/sotto-relay" --listen 127.0.0.1:0 --data-dir "$demo/relay" >"$demo/relay.out" 2>"$demo/relay.log" &
pids+=($!)
for _ in $(seq 200); do [ -s "$demo/relay.out" ] && break; sleep 0.05; done
relay=$(awk '{print $2}' "$demo/relay.out")
echo "== sotto-relay listening on $relay"

# Two daemons, alice and bob, each with its own directories.
start_daemon() {
  local who=$1
  mkdir -p "$demo/$who"/{run,data,config,home}
  chmod 700 "$demo/$who/run"
  HOME="$demo/$who/home" XDG_RUNTIME_DIR="$demo/$who/run" XDG_DATA_HOME="$demo/$who/data" \
    XDG_CONFIG_HOME="$demo/$who/config" "$bin/sottod" 2>"$demo/$who.log" &
  pids+=($!)
}
as() {
  local who=$1; shift
  HOME="$demo/$who/home" XDG_RUNTIME_DIR="$demo/$who/run" XDG_DATA_HOME="$demo/$who/data" \
    XDG_CONFIG_HOME="$demo/$who/config" "$bin/sotto" "$@"
}
start_daemon alice
start_daemon bob
for who in alice bob; do
  for _ in $(seq 200); do as "$who" status >/dev/null 2>&1 && break; sleep 0.05; done
done

echo "== alice: sotto account create --relay $relay alice"
as alice account create --relay "$relay" alice
echo "== bob: sotto account create --relay $relay bob"
as bob account create --relay "$relay" bob
echo "== alice: sotto conversation create bob@$relay"
as alice conversation create "bob@$relay"
echo "== alice: sotto send bob@$relay 'Hello Bob, this is end-to-end encrypted.'"
as alice send "bob@$relay" "Hello Bob, this is end-to-end encrypted."
echo "== bob: sotto messages alice@$relay"
for _ in $(seq 200); do
  out=$(as bob messages "alice@$relay" 2>/dev/null || true)
  [ -n "$out" ] && break
  sleep 0.05
done
echo "$out"
echo "== bob: sotto send alice@$relay 'Hi Alice!'"
as bob send "alice@$relay" "Hi Alice!"
sleep 0.3
echo "== alice: sotto messages bob@$relay"
as alice messages "bob@$relay"
echo "== bob: sotto status"
as bob status
echo "== the relay's database holds no plaintext:"
if grep -rq "end-to-end encrypted" "$demo/relay"; then echo "PLAINTEXT FOUND"; exit 1; else echo "   grep found nothing"; fi
