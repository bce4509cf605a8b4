#!/usr/bin/env bash
# Installs the system packages the tests and the demo use, when any is missing.
# Debian/Ubuntu: dbus (private session buses), gnome-keyring + libsecret-tools (a real
# Secret Service), systemd (systemd-analyze, systemd-socket-activate), socat and
# util-linux (a raw client run as another user), keyutils; libssl-dev (the libcrypto that
# rusqlite's bundled SQLCipher links against, headers and the .so link); neovim, emacs-nox and
# elpa-package-lint, python3-venv for the editor plugins' and the Python client's tests;
# zsh, fish, groff-base and man-db for the shell completions and man pages;
# tmux + procps for sotto chat's end-to-end tests in a real terminal; postgresql
# (Debian's server binaries in /usr/lib/postgresql/N/bin: the relay tests initdb a
# private cluster).
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
# The disk-full and read-only tests mount a small tmpfs (daemon/tests/faults_disk.rs).
have mount || need+=(mount)
have umount || need+=(mount)
have prlimit || need+=(util-linux)
have keyctl || need+=(keyutils)
[ -e /usr/include/openssl/evp.h ] || need+=(libssl-dev)
# The thin clients' tests (daemon/tests/clients/): Neovim, Emacs with package-lint, and
# Python's venv module (pytest is installed into a venv under target/ from PyPI).
have nvim || need+=(neovim)
have emacs || need+=(emacs-nox)
[ -d /usr/share/emacs/site-lisp/elpa-src ] && ls /usr/share/emacs/site-lisp/elpa-src 2>/dev/null | grep -q '^package-lint-' || need+=(elpa-package-lint)
have python3 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# The shell completions and man pages: real bash, zsh and fish load them; groff and man-db
# render the pages.
have zsh || need+=(zsh)
have fish || need+=(fish)
have groff || need+=(groff-base)
have man || need+=(man-db)
# sotto chat's end-to-end tests: a real terminal (tmux), pgrep to find the chat's pid.
have tmux || need+=(tmux)
have pgrep || need+=(procps)
# The relay's PostgreSQL tests.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
# The desktop app (gtk/) and its AT-SPI test (daemon/tests/gtk.rs): GTK 4 + libadwaita
# headers, Xvfb, the accessibility bus and pyatspi, desktop-file-utils and appstream for the
# packaging checks, ImageMagick's `import` for the screenshots, fonts for the window.
pc() { pkg-config --exists "$1" 2>/dev/null; }
have pkg-config || need+=(pkg-config)
pc gtk4 || need+=(libgtk-4-dev)
pc libadwaita-1 || need+=(libadwaita-1-dev)
have Xvfb || need+=(xvfb)
have xauth || need+=(xauth)
[ -x /usr/libexec/at-spi-bus-launcher ] || need+=(at-spi2-core)
/usr/bin/python3 -c 'import pyatspi' 2>/dev/null || need+=(python3-pyatspi gir1.2-atspi-2.0)
# python3-xlib: the test harness gives the window the X input focus, as a window manager
# would (there is none under Xvfb).
/usr/bin/python3 -c 'import Xlib' 2>/dev/null || need+=(python3-xlib)
have desktop-file-validate || need+=(desktop-file-utils)
have appstreamcli || need+=(appstream)
have import || need+=(imagemagick)
fc-list 2>/dev/null | grep -qi 'dejavu' || need+=(fonts-dejavu-core)

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
$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
$sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
