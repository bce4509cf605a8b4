#!/usr/bin/env bash
# Installs the system packages the tests and the demo use, when any is missing.
# Debian/Ubuntu: dbus (private session buses), gnome-keyring + libsecret-tools (a real
# Secret Service), systemd (systemd-analyze, systemd-socket-activate), socat and
# util-linux (a raw client run as another user), keyutils; libssl-dev (the libcrypto that
# rusqlite's bundled SQLCipher links against, headers and the .so link).
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have dbus-daemon || need+=(dbus)
have dbus-send || need+=(dbus-bin)
have dbus-monitor || need+=(dbus-bin)
have gdbus || need+=(libglib2.0-bin)
have busctl || need+=(systemd)
have gnome-keyring-daemon || need+=(gnome-keyring)
have secret-tool || need+=(libsecret-tools)
have systemd-analyze || need+=(systemd)
have systemd-socket-activate || need+=(systemd)
have socat || need+=(socat)
have setpriv || need+=(util-linux)
have prlimit || need+=(util-linux)
have keyctl || need+=(keyutils)
[ -e /usr/include/openssl/evp.h ] || need+=(libssl-dev)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${need[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if have sudo; then sudo="sudo"; else
    echo "missing packages (${need[*]}) and not root: install them, then rerun" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
