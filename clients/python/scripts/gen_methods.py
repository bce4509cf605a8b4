#!/usr/bin/env python3
"""Generates sotto_client/_generated.py (typed helpers for every method) from the daemon's
OpenRPC document (``rpc.discover``).

    python3 clients/python/scripts/gen_methods.py            # a throwaway target/debug/sottod
    python3 clients/python/scripts/gen_methods.py --socket PATH   # a running daemon
    python3 clients/python/scripts/gen_methods.py --from doc.json --check

``--check`` writes nothing and exits 1 when the checked-in file differs.
"""

from __future__ import annotations

import argparse
import json
import keyword
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
OUTPUT = os.path.join(HERE, "..", "src", "sotto_client", "_generated.py")
REGENERATE = "cargo build --workspace && python3 clients/python/scripts/gen_methods.py"


# -- getting the document -----------------------------------------------------------------


def _rpc(path: str, method: str) -> Any:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
    response = json.loads(buf)
    if "error" in response:
        raise SystemExit("%s failed: %s" % (method, response["error"]))
    return response["result"]


def discover_from_throwaway(sottod: str) -> Any:
    """Starts sottod on temp dirs (file key store, no D-Bus), asks rpc.discover, stops it."""
    with tempfile.TemporaryDirectory(prefix="sotto-gen-") as root:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SOTTO_KEY_STORE": "file",
               "DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent/bus", "SOTTO_LOG": "warn"}
        for d, var in (("run", "XDG_RUNTIME_DIR"), ("data", "XDG_DATA_HOME"),
                       ("config", "XDG_CONFIG_HOME"), ("home", "HOME")):
            os.mkdir(os.path.join(root, d), 0o700)
            env[var] = os.path.join(root, d)
        sock = os.path.join(root, "run", "sotto", "sottod.sock")
        proc = subprocess.Popen([sottod], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    return _rpc(sock, "rpc.discover")
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("%s did not start" % sottod)
                    time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(30)


# -- schemas to Python types ----------------------------------------------------------------


class Types:
    def __init__(self, doc: Dict[str, Any]) -> None:
        self.schemas: Dict[str, Any] = doc.get("components", {}).get("schemas", {}) or {}

    def resolve(self, schema: Any, depth: int = 0) -> Any:
        while isinstance(schema, dict) and "$ref" in schema and depth < 20:
            name = schema["$ref"].rsplit("/", 1)[-1]
            schema = self.schemas.get(name, {})
            depth += 1
        return schema

    def py(self, schema: Any, depth: int = 0) -> str:
        if depth > 8 or not isinstance(schema, dict) or schema is True:
            return "Any"
        schema = self.resolve(schema)
        if not isinstance(schema, dict):
            return "Any"
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = schema[key]
                nullable = any(isinstance(o, dict) and o.get("type") == "null" for o in options)
                rest = [self.py(o, depth + 1) for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
                rest = sorted(set(rest), key=rest.index)
                inner = rest[0] if len(rest) == 1 else ("Union[%s]" % ", ".join(rest) if rest else "Any")
                if "Any" in rest:
                    inner = "Any"
                return "Optional[%s]" % inner if nullable and inner != "Any" else inner
        if "allOf" in schema and len(schema["allOf"]) == 1:
            return self.py(schema["allOf"][0], depth + 1)
        if "const" in schema:
            return self._scalar(type(schema["const"]).__name__)
        if "enum" in schema and all(isinstance(v, str) for v in schema["enum"]):
            return "str"
        t = schema.get("type")
        if isinstance(t, list):
            nullable = "null" in t
            rest = [x for x in t if x != "null"]
            inner = self.py(dict(schema, type=rest[0]), depth + 1) if len(rest) == 1 else "Any"
            return "Optional[%s]" % inner if nullable and inner != "Any" else inner
        if t == "array":
            return "List[%s]" % self.py(schema.get("items", {}), depth + 1)
        if t == "object":
            return "Dict[str, Any]"
        if t in ("string", "integer", "number", "boolean"):
            return {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}[t]
        if "properties" in schema:
            return "Dict[str, Any]"
        return "Any"

    @staticmethod
    def _scalar(name: str) -> str:
        return {"str": "str", "int": "int", "float": "float", "bool": "bool"}.get(name, "Any")


def params_of(method: Dict[str, Any], types: Types) -> List[Tuple[str, bool, Any, str]]:
    """(name, required, schema, description) of each named param, in order."""
    descriptors = method.get("params") or []
    if len(descriptors) == 1 and descriptors[0].get("name") == "params":
        # The old shape: one descriptor holding the whole params object.
        obj = types.resolve(descriptors[0].get("schema", {}))
        required = set(obj.get("required", []) or [])
        return [(name, name in required, schema, (types.resolve(schema) or {}).get("description", "")
                 if isinstance(schema, dict) else "")
                for name, schema in (obj.get("properties") or {}).items()]
    out = []
    for d in descriptors:
        out.append((d["name"], bool(d.get("required", False)), d.get("schema", {}),
                    d.get("description") or d.get("summary") or ""))
    return out


# -- rendering ---------------------------------------------------------------------------


def ident(name: str) -> str:
    name = name.replace(".", "_").replace("-", "_")
    return name + "_" if keyword.iskeyword(name) else name


def render(doc: Dict[str, Any]) -> str:
    types = Types(doc)
    sync_out: List[str] = []
    async_out: List[str] = []
    for method in doc.get("methods", []):
        name = method["name"]
        params = params_of(method, types)
        required = [p for p in params if p[1]]
        optional = [p for p in params if not p[1]]
        sig = ["self"]
        if params:
            sig.append("*")
        for pname, _, schema, _ in required:
            sig.append("%s: %s" % (ident(pname), types.py(schema)))
        for pname, _, schema, _ in optional:
            t = types.py(schema)
            if not t.startswith("Optional[") and t != "Any":
                t = "Optional[%s]" % t
            sig.append("%s: %s = None" % (ident(pname), t))
        result = types.py((method.get("result") or {}).get("schema", {}))
        doc_lines = [method.get("summary") or method.get("description") or name]
        for pname, req, _, desc in params:
            desc = " ".join(str(desc).split())
            doc_lines.append("``%s``%s%s" % (pname, "" if req else " (optional)", ": " + desc if desc else ""))
        docstring = doc_lines[0]
        if len(doc_lines) > 1:
            docstring += "\n\n" + "".join("        %s\n" % line for line in doc_lines[1:]) + "        "
        build = ["        params: Dict[str, Any] = {}"]
        for pname, req, _, _ in params:
            if req:
                build.append("        params[%r] = %s" % (pname, ident(pname)))
            else:
                build.append("        if %s is not None:\n            params[%r] = %s" % (ident(pname), pname, ident(pname)))
        body = "\n".join(build)
        for out, prefix, call in ((sync_out, "def", "self.call_params"), (async_out, "async def", "await self.call_params")):
            out.append(
                "    %s %s(%s) -> %s:\n        \"\"\"%s\"\"\"\n%s\n        return %s(%r, params)\n"
                % (prefix, ident(name), ", ".join(sig), result, docstring.replace('"""', "'''"), body, call, name)
            )
    header = '''"""Typed helpers for every method of the daemon's API.

GENERATED by clients/python/scripts/gen_methods.py from the daemon's ``rpc.discover``;
do not edit. Regenerate with: %s
"""

# fmt: off
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union  # noqa: F401


class SyncMethods:
    """One method per API method; mixed into ``Client``."""

    if TYPE_CHECKING:
        def call_params(self, method: str, params: Dict[str, Any]) -> Any: ...

''' % REGENERATE
    middle = '''

class AsyncMethods:
    """One coroutine per API method; mixed into ``AsyncClient``."""

    if TYPE_CHECKING:
        async def call_params(self, method: str, params: Dict[str, Any]) -> Any: ...

'''
    return header + "\n".join(sync_out) + middle + "\n".join(async_out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--socket", help="ask a running daemon at this socket")
    src.add_argument("--from", dest="from_file", help="read the document from a file ('-': stdin)")
    src.add_argument("--sottod", default=os.path.join(REPO, "target", "debug", "sottod"),
                     help="the sottod binary to start on temp dirs (default: target/debug/sottod)")
    ap.add_argument("--check", action="store_true", help="exit 1 if the checked-in file is stale")
    args = ap.parse_args()
    if args.from_file:
        with (sys.stdin if args.from_file == "-" else open(args.from_file, encoding="utf-8")) as f:
            doc = json.load(f)
    elif args.socket:
        doc = _rpc(args.socket, "rpc.discover")
    else:
        doc = discover_from_throwaway(args.sottod)
    text = render(doc)
    if args.check:
        try:
            with open(OUTPUT, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = ""
        if current != text:
            print("clients/python/src/sotto_client/_generated.py is stale against the daemon's "
                  "rpc.discover; regenerate it with:\n    %s" % REGENERATE, file=sys.stderr)
            return 1
        print("clients/python/src/sotto_client/_generated.py is up to date")
        return 0
    with open(OUTPUT, "w", encoding="utf-8") as f:
        f.write(text)
    print("wrote %s (%d methods)" % (os.path.relpath(OUTPUT), len(doc.get("methods", []))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
