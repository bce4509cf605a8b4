#!/usr/bin/python3
"""Drives sotto-gtk through AT-SPI, as assistive technology does.

A thin adapter for daemon/tests/gtk.rs: one JSON command per line on stdin, one JSON reply
per line on stdout. It only finds accessibles by role and name, reads names, performs
actions ("click"), selects list children and types on the keyboard through the AT-SPI
registry (XTest underneath) - nothing a screen reader or a switch-access tool could not do.

Commands:
  {"op": "wait", "name": RE, "role": ROLE?, "timeout": S}  -> {"names": [...]} (showing ones)
  {"op": "gone", "name": RE, "role": ROLE?, "timeout": S}  -> {} once none is showing
  {"op": "names", "role": ROLE?, "name": RE?}              -> {"names": [...]} (showing ones)
  {"op": "click", "name": RE, "role": ROLE?}               -> {} (the "click" action)
  {"op": "select", "list": RE, "name": RE}                 -> {} (Selection.selectChild)
  {"op": "type", "text": TEXT}                             -> {} (key presses)
  {"op": "key", "key": "Return" | "shift+Return" | "Tab" | "Escape"} -> {}
  {"op": "pointer", "x": X, "y": Y}                        -> {} (absolute pointer motion)
  {"op": "text", "name": RE, "role": ROLE?}                -> {"text": ...} (Text interface)
  {"op": "focused"}                                        -> {"names": [...]} (FOCUSED ones)
Errors: {"error": "..."}.
"""

import json
import re
import sys
import time

import pyatspi

APP = sys.argv[1] if len(sys.argv) > 1 else "sotto-gtk"
KEYSYMS = {"Return": 0xFF0D, "Tab": 0xFF09, "Escape": 0xFF1B, "BackSpace": 0xFF08}
# Shift_L's keycode in the X server's default keymap (Xvfb: evdev layout).
SHIFT_L_KEYCODE = 50


def app_root():
    desktop = pyatspi.Registry.getDesktop(0)
    desktop.clear_cache()
    for i in range(desktop.childCount):
        a = desktop.getChildAtIndex(i)
        if a is not None and a.name == APP:
            return a
    return None


def showing(acc):
    """GTK 4.8 sets SHOWING on windows only; VISIBLE is the widget's own visibility."""
    try:
        return acc.getState().contains(pyatspi.STATE_VISIBLE)
    except Exception:
        return False


def walk(acc, depth=0):
    """Every showing accessible under acc (hidden subtrees are skipped)."""
    if acc is None or depth > 60:
        return
    yield acc
    try:
        n = acc.childCount
    except Exception:
        return
    for i in range(n):
        try:
            c = acc.getChildAtIndex(i)
        except Exception:
            continue
        if c is not None and showing(c):
            yield from walk(c, depth + 1)


def matches(acc, name_re, role):
    try:
        if role and acc.getRoleName() != role:
            return False
        return name_re is None or re.search(name_re, acc.name or "") is not None
    except Exception:
        return False


def dump():
    """role:name[states] of everything under the app, showing or not (for error messages)."""
    out = []

    def rec(acc, depth):
        if acc is None or depth > 40:
            return
        try:
            states = ",".join(s.value_nick for s in acc.getState().getStates())
            out.append(f"{'  ' * depth}{acc.getRoleName()}:{acc.name!r} [{states}]")
            for i in range(acc.childCount):
                rec(acc.getChildAtIndex(i), depth + 1)
        except Exception as e:
            out.append(f"{'  ' * depth}<{e}>")

    root = app_root()
    if root is not None:
        root.clear_cache()
        rec(root, 0)
    return "\n".join(out[:400])


def find_all(name_re=None, role=None):
    root = app_root()
    if root is None:
        return []
    root.clear_cache()
    return [a for a in walk(root) if a is not root and matches(a, name_re, role)]


def wait_until(timeout, f):
    end = time.monotonic() + timeout
    while True:
        r = f()
        if r:
            return r
        if time.monotonic() > end:
            return None
        time.sleep(0.2)


def do_action(acc, wanted=("click", "activate", "press")):
    ai = acc.queryAction()
    names = [ai.getName(i) for i in range(ai.nActions)]
    for w in wanted:
        if w in names:
            ai.doAction(names.index(w))
            return
    if ai.nActions:
        ai.doAction(0)
        return
    raise RuntimeError(f"{acc.name!r} has no action")


def key_sym(sym, kind=pyatspi.KEY_SYM):
    pyatspi.Registry.generateKeyboardEvent(sym, None, kind)


def handle(cmd):
    op = cmd["op"]
    role = cmd.get("role")
    timeout = float(cmd.get("timeout", 20))
    if op == "wait":
        found = wait_until(timeout, lambda: find_all(cmd["name"], role))
        if not found:
            seen = dump()
            return {"error": f"nothing showing matches {cmd['name']!r} ({role}); showing: {seen}"}
        return {"names": [a.name for a in found]}
    if op == "gone":
        ok = wait_until(timeout, lambda: not find_all(cmd["name"], role))
        return {} if ok else {"error": f"{cmd['name']!r} is still showing"}
    if op == "names":
        return {"names": [a.name for a in find_all(cmd.get("name"), role)]}
    if op == "click":
        found = wait_until(timeout, lambda: find_all(cmd["name"], role))
        if not found:
            return {"error": f"nothing to click matches {cmd['name']!r}"}
        do_action(found[0])
        return {}
    if op == "select":
        def pick():
            for lst in find_all(cmd["list"], None):
                for i in range(lst.childCount):
                    c = lst.getChildAtIndex(i)
                    if c is not None and re.search(cmd["name"], c.name or ""):
                        return (lst, i)
            return None
        found = wait_until(timeout, pick)
        if not found:
            return {"error": f"no child matching {cmd['name']!r} in {cmd['list']!r}"}
        lst, i = found
        if not lst.querySelection().selectChild(i):
            return {"error": "selectChild refused"}
        return {}
    if op == "type":
        for ch in cmd["text"]:
            pyatspi.Registry.generateKeyboardEvent(0, ch, pyatspi.KEY_STRING)
            time.sleep(0.01)
        return {}
    if op == "key":
        k = cmd["key"]
        if k.startswith("shift+"):
            pyatspi.Registry.generateKeyboardEvent(SHIFT_L_KEYCODE, None, pyatspi.KEY_PRESS)
            key_sym(KEYSYMS[k[6:]])
            pyatspi.Registry.generateKeyboardEvent(SHIFT_L_KEYCODE, None, pyatspi.KEY_RELEASE)
        else:
            key_sym(KEYSYMS[k])
        return {}
    if op == "text":
        found = wait_until(timeout, lambda: find_all(cmd["name"], role))
        if not found:
            return {"error": f"nothing matches {cmd['name']!r}"}
        t = found[0].queryText()
        return {"text": t.getText(0, t.characterCount)}
    if op == "focused":
        return {"names": [a.name for a in find_all(None, None)
                          if a.getState().contains(pyatspi.STATE_FOCUSED)]}
    if op == "pointer":
        pyatspi.Registry.generateMouseEvent(int(cmd["x"]), int(cmd["y"]), "abs")
        return {}
    return {"error": f"unknown op {op!r}"}


def main():
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            reply = handle(json.loads(line))
        except Exception as e:  # reported to the test, which fails with it
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
