"""Where the daemon's socket is: the same rule as sottod's (API.md, "Paths and environment")."""

from __future__ import annotations

import os
import stat
from typing import Mapping, Optional, Union

SOCKET_ENV = "SOTTO_SOCKET"
SOCKET_FILE = "sottod.sock"

PathLike = Union[str, "os.PathLike[str]"]


def default_socket(env: Optional[Mapping[str, str]] = None, uid: Optional[int] = None) -> str:
    """The socket path the daemon uses.

    ``$SOTTO_SOCKET`` when it is an absolute path; else ``$XDG_RUNTIME_DIR/sotto/sottod.sock``
    when ``XDG_RUNTIME_DIR`` is an absolute path; else ``/tmp/sotto-$UID/sottod.sock``.
    """
    env = os.environ if env is None else env
    override = env.get(SOCKET_ENV, "")
    if override.startswith("/"):
        return override
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime.startswith("/"):
        return os.path.join(runtime, "sotto", SOCKET_FILE)
    if uid is None:
        uid = os.getuid()
    return os.path.join("/tmp/sotto-%d" % uid, SOCKET_FILE)


def check_socket_dir(path: str) -> Optional[str]:
    """Why the directory of a socket under ``/tmp`` is not safe to use, or None.

    Outside ``XDG_RUNTIME_DIR`` anyone may create ``/tmp/sotto-$UID`` first; like the
    daemon, a client only trusts a real directory (not a symlink) that it owns with no
    access for group or others.
    """
    directory = os.path.dirname(path)
    if not directory.startswith("/tmp/"):
        return None
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        return None  # connecting fails with a clear "no daemon" error
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return "%s is not a directory" % directory
    if st.st_uid != os.getuid():
        return "%s is owned by uid %d, not by you" % (directory, st.st_uid)
    if st.st_mode & 0o077:
        return "%s is accessible to other users (mode %o)" % (directory, st.st_mode & 0o777)
    return None
