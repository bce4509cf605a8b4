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
  {"op": "set_text", "name": RE, "role": ROLE?, "text": T} -> {} (EditableText.SetTextContents)
  {"op": "append_text", "name": RE, "role": ROLE?, "text": T} -> {} (EditableText.InsertText
                                                              at the end)
  {"op": "key", "key": "Return" | "shift+Return" | "Escape", "to": RE}
      -> {} once the accessible named RE has the keyboard focus (FOCUSED, which GTK sets only
         in the active window): a key press through the registry; Shift by locking the
         modifier (no keycode of a particular keymap)
  {"op": "focused", "name": RE, "timeout": S}              -> {} once one is FOCUSED
  {"op": "text", "name": RE, "role": ROLE?}                -> {"text": ...} (Text interface)
  {"op": "pointer", "x": X, "y": Y}                        -> {} (absolute pointer motion)
  {"op": "first", "list": RE, "name": RE, "timeout": S}    -> {"names": [...]} once the top
                                                              row (as drawn) matches
  {"op": "activate", "name": RE}  -> {} (X input focus to the top-level window titled RE,
                                      as a window manager gives it on a click)
Errors: {"error": "..."}.
"""

import json
import re
import sys
import time

import pyatspi
import Xlib.display
import Xlib.error
from Xlib import X

APP = sys.argv[1] if len(sys.argv) > 1 else "sotto-gtk"
KEYSYMS = {"Return": 0xFF0D, "Tab": 0xFF09, "Escape": 0xFF1B, "BackSpace": 0xFF08}
# X11's ShiftMask, locked and unlocked around a key (XkbLockModifiers in the registry).
SHIFT_MASK = 1


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
            role = acc.getRoleName()
            # Unnamed containers and GTK's internal parts only make the dump long.
            if acc.name and not acc.name.startswith(("Gtk", "Adw")) or depth == 0:
                out.append(f"{'  ' * depth}{role}:{acc.name!r} [{states}]")
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


def has_state(acc, state):
    try:
        return acc.getState().contains(state)
    except Exception:
        return False


def focused(name_re):
    """The showing accessible named name_re that has the keyboard focus, if any."""
    for a in find_all(name_re, None):
        if has_state(a, pyatspi.STATE_FOCUSED):
            return a
    return None


_XDISPLAY = []


def xdisplay():
    if not _XDISPLAY:
        _XDISPLAY.append(Xlib.display.Display())
    return _XDISPLAY[0]


def x_window(name_re):
    """The mapped top-level X window whose title matches name_re."""
    d = xdisplay()
    for w in d.screen().root.query_tree().children:
        try:
            if w.get_attributes().map_state != X.IsViewable:
                continue
            title = w.get_full_text_property(d.intern_atom("_NET_WM_NAME")) or w.get_wm_name()
        except Xlib.error.XError:
            continue
        if isinstance(title, str) and re.search(name_re, title):
            return w
    return None


def focused_names():
    return [a.name for a in find_all(None, None) if has_state(a, pyatspi.STATE_FOCUSED)]


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
    # The default is the Rust side's UI_WAIT (daemon/tests/gtk.rs): a command that names
    # no timeout (click, set_text, ...) waits as patiently for its widget on a loaded machine.
    timeout = float(cmd.get("timeout", 45))
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
            return {"error": f"nothing to click matches {cmd['name']!r} ({role}); "
                             f"showing: {dump()}"}
        # A GtkMenuButton is two accessibles of one name; the inner button has the action.
        for acc in found:
            try:
                if acc.queryAction().nActions:
                    do_action(acc)
                    return {}
            except NotImplementedError:
                continue
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
    if op in ("set_text", "append_text"):
        found = wait_until(timeout, lambda: find_all(cmd["name"], role))
        if not found:
            return {"error": f"nothing editable matches {cmd['name']!r}; showing: {dump()}"}
        acc = found[0]
        et = acc.queryEditableText()
        if op == "set_text":
            ok = et.setTextContents(cmd["text"])
        else:
            n = acc.queryText().characterCount
            ok = et.insertText(n, cmd["text"], len(cmd["text"].encode()))
        if not ok:
            return {"error": f"{acc.name!r} refused the text (not editable?)"}
        return {}
    if op == "focused":
        acc = wait_until(timeout, lambda: focused(cmd["name"]))
        if not acc:
            return {"error": f"{cmd['name']!r} never got the keyboard focus; "
                             f"focused: {focused_names()}; showing: {dump()}"}
        return {}
    if op == "key":
        # Keys go to the focused widget of the active window: wait for it to be the one.
        if cmd.get("to") and not wait_until(timeout, lambda: focused(cmd["to"])):
            return {"error": f"{cmd['to']!r} does not have the keyboard focus for "
                             f"{cmd['key']}; focused: {focused_names()}; showing: {dump()}"}
        k = cmd["key"]
        if k.startswith("shift+"):
            pyatspi.Registry.generateKeyboardEvent(SHIFT_MASK, None, pyatspi.KEY_LOCKMODIFIERS)
            try:
                key_sym(KEYSYMS[k[6:]])
            finally:
                pyatspi.Registry.generateKeyboardEvent(
                    SHIFT_MASK, None, pyatspi.KEY_UNLOCKMODIFIERS)
        else:
            key_sym(KEYSYMS[k])
        return {}
    if op == "text":
        found = wait_until(timeout, lambda: find_all(cmd["name"], role))
        if not found:
            return {"error": f"nothing matches {cmd['name']!r}"}
        t = found[0].queryText()
        return {"text": t.getText(0, t.characterCount)}
    if op == "first":
        # The list's rows top to bottom as drawn (their extents), not the accessible tree's
        # child order: waits until the top one's name matches.
        def top():
            for lst in find_all(cmd["list"], None):
                rows = []
                for i in range(lst.childCount):
                    c = lst.getChildAtIndex(i)
                    if c is None or not showing(c):
                        continue
                    e = c.queryComponent().getExtents(pyatspi.WINDOW_COORDS)
                    rows.append((e.y, c.name or ""))
                rows.sort()
                if rows and re.search(cmd["name"], rows[0][1]):
                    return [n for _, n in rows]
            return None
        found = wait_until(timeout, top)
        if not found:
            return {"error": f"the top of {cmd['list']!r} is not {cmd['name']!r}: {dump()}"}
        return {"names": found}
    if op == "activate":
        # There is no window manager under Xvfb: give the app's window named RE the X input
        # focus as one would when the user clicks it (XSetInputFocus).
        w = wait_until(timeout, lambda: x_window(cmd["name"]))
        if w is None:
            return {"error": f"no X window named {cmd['name']!r}"}
        xdisplay().set_input_focus(w, X.RevertToPointerRoot, X.CurrentTime)
        xdisplay().sync()
        return {}
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
