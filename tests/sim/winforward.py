#!/usr/bin/env python3
"""The Unix side of the simulator's Windows-side stand-ins (make test-windows).

Wine starts a Unix program but loses its exit code, so upkit.exe cannot run the simulator's
stand-ins (Octopus.Server, msiexec, sc, filever) directly. tests/windows/forward.c, copied as
Octopus.Server.exe, msiexec.exe, sc.exe or filever.exe, reads `<itself>.forward` beside it
(`port=`, `token=`, `target=` lines) and sends its arguments, current folder and stdin here over
loopback TCP; this program runs the target on the Unix side and sends back its stdout, stderr and
full exit code. Nothing of Octopus is copied here: the targets are the simulator's own stand-ins.

    python3 tests/sim/winforward.py serve --info FILE [--watch-pid PID] [--max-seconds N]
            [--wineprefix DIR] [--allow NAME=COMMAND]...
    python3 tests/sim/winforward.py echo ARGS...     (a target for tests: prints its folder,
            each argument on a line, then its stdin)

`serve` listens on 127.0.0.1 only (a free port), writes FILE (mode 0600: {"port", "token"}) once
it listens, and exits when PID is gone, after N seconds (default 1200), or on SIGTERM/SIGINT.

A target is either
  - the Unix path of a stand-in the simulator wrote (simlib.machine.standin_call): its function
    runs in a child process with simlib's FULL_EXIT_CODES set, so 3010 comes back as 3010, not 194;
  - `program:NAME`, a command given with --allow (e.g. the Linux build of upkit).
Anything else is refused.

Arguments and the current folder in Wine's form are translated to Unix paths: `X:\\a\\b`, `X:/a/b`
and the value of `--opt=X:\\...` or `NAME=X:\\...` (X is a drive of the Wine prefix: Z: is `/`).
An argument naming a Windows-side stand-in (a file with a `.forward` beside it; in Wine's form or
as a Unix path, which Wine opens on the Z: drive) names the Unix
program it forwards to, so `filever.exe Z:\\...\\Octopus.Server.exe` asks the version of the
simulator's Octopus.Server.

The protocol (all lengths 4-byte big-endian): request = magic `UPKFWD1\\n`, then the strings token,
target, cwd, each argument (preceded by their count), then stdin (length 0xFFFFFFFF: none).
Answer = frames of a type byte and a length-prefixed payload: `o` stdout, `e` stderr, `h` a
heartbeat every 2 s (empty), `x` the exit code (4 bytes) and last, or `f` a refusal (4-byte exit
code, then the message) and last. When the connection goes away the target's process group is
killed.
"""

import hmac
import json
import os
import re
import secrets
import selectors
import shlex
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from simlib.machine import standin_call  # noqa: E402
MAGIC = b"UPKFWD1\n"
NONE = 0xFFFFFFFF
HEARTBEAT = 2.0
MAX_FIELD = 64 << 20
ERROR_FILE_NOT_FOUND = 2
ERROR_ACCESS_DENIED = 5

children = set()
children_lock = threading.Lock()


class Refused(Exception):
    def __init__(self, message, code=ERROR_ACCESS_DENIED):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- paths

def drive_root(prefix, letter):
    """The Unix folder behind drive `letter` in the Wine prefix, or None."""
    link = os.path.join(prefix, "dosdevices", letter.lower() + ":")
    return os.path.realpath(link) if os.path.exists(link) else None


WINPATH = re.compile(r"^([A-Za-z]):[\\/](.*)$", re.S)


def unix_path(prefix, s):
    """A Wine path (X:\\a\\b or X:/a/b) as a Unix path; None when `s` is not one."""
    m = WINPATH.match(s)
    if not m:
        return None
    root = drive_root(prefix, m.group(1))
    if root is None:
        return None
    rest = m.group(2).replace("\\", "/")
    return os.path.normpath(os.path.join(root, rest)) if rest else root


def forwarded_target(path):
    """The Unix program a Windows-side stand-in at `path` forwards to, or None."""
    try:
        with open(path + ".forward", encoding="utf-8") as f:
            for line in f:
                if line.startswith("target="):
                    t = line[len("target="):].rstrip("\r\n")
                    return t if t.startswith("/") else None
    except OSError:
        return None
    return None


def translate(prefix, arg):
    """One argument with its Wine path (whole, or after `=`) as the Unix path it names."""
    def one(s):
        u = s if s.startswith("/") and len(s) > 1 else unix_path(prefix, s)
        if u is None:
            return s
        return forwarded_target(u) or (s if u is s else u)
    t = one(arg)
    if t != arg:
        return t
    m = re.match(r"^(-{0,2}[A-Za-z][\w.-]*=)(.*)$", arg, re.S)
    if m:
        return m.group(1) + one(m.group(2))
    return arg


# ---------------------------------------------------------------- the wire

def recv_exact(conn, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError("the stand-in closed the connection")
        buf += chunk
    return bytes(buf)


def recv_u32(conn):
    return struct.unpack(">I", recv_exact(conn, 4))[0]


def recv_field(conn, allow_none=False):
    n = recv_u32(conn)
    if n == NONE and allow_none:
        return None
    if n > MAX_FIELD:
        raise Refused("a request field of %d bytes" % n)
    return recv_exact(conn, n)


def frame(kind, payload=b""):
    return kind + struct.pack(">I", len(payload)) + payload


def read_request(conn):
    if recv_exact(conn, len(MAGIC)) != MAGIC:
        raise Refused("not a stand-in request")
    token = recv_field(conn)
    target = recv_field(conn).decode("utf-8")
    cwd = recv_field(conn).decode("utf-8")
    argc = recv_u32(conn)
    if argc > 4096:
        raise Refused("%d arguments" % argc)
    args = [recv_field(conn).decode("utf-8") for _ in range(argc)]
    stdin = recv_field(conn, allow_none=True)
    return token, target, cwd, args, stdin


# ---------------------------------------------------------------- what runs

def command_for(target, allowed):
    """The argv prefix for a target and whether it reports its full exit code on a pipe."""
    if target.startswith("program:"):
        cmd = allowed.get(target[len("program:"):])
        if cmd is None:
            raise Refused("target %s is not one this forwarder was started with" % target)
        return list(cmd), False
    if not os.path.isabs(target):
        raise Refused("target %s is not an absolute Unix path" % target)
    if not os.path.exists(target):
        raise Refused("%s does not exist (the program is not installed)" % target, ERROR_FILE_NOT_FOUND)
    call = standin_call(target)
    if call is None:
        raise Refused("%s is not a stand-in of the simulator" % target)
    module, func, machine = call
    if module not in ("machine", "servercli") or not os.path.isfile(os.path.join(machine, "machine.json")):
        raise Refused("%s is not a stand-in of a simulated machine" % target)
    return [sys.executable, os.path.abspath(__file__), "call", module, func, machine], True


def serve_one(conn, token, allowed, prefix):
    conn.settimeout(30)
    try:
        got, target, cwd, args, stdin = read_request(conn)
        if not hmac.compare_digest(got, token):
            raise Refused("wrong token")
        ucwd = unix_path(prefix, cwd) if WINPATH.match(cwd) else cwd
        if not ucwd or not os.path.isdir(ucwd):
            raise Refused("the current folder %s has no Unix path" % cwd)
        argv, full = command_for(target, allowed)
        args = [translate(prefix, a) for a in args]
    except Refused as e:
        conn.sendall(frame(b"f", struct.pack(">I", e.code) + str(e).encode()))
        return
    except (EOFError, OSError, UnicodeDecodeError, ValueError):
        return
    conn.settimeout(None)
    run(conn, argv, full, args, ucwd, stdin)


def run(conn, argv, full, args, cwd, stdin):
    code_r = code_w = None
    if full:  # the stand-in's function writes its full exit code on a pipe of its own
        code_r, code_w = os.pipe()
        argv = argv + [str(code_w), "--"]
    try:
        p = subprocess.Popen(argv + args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                             start_new_session=True, pass_fds=(code_w,) if full else ())
    except OSError as e:
        for fd in (code_r, code_w):
            if fd is not None:
                os.close(fd)
        conn.sendall(frame(b"f", struct.pack(">I", ERROR_FILE_NOT_FOUND) + ("cannot start %s: %s" % (argv[0], e)).encode()))
        return
    with children_lock:
        children.add(p)
    if code_w is not None:
        os.close(code_w)
    if stdin is not None:
        threading.Thread(target=feed, args=(p.stdin, stdin), daemon=True).start()
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ, b"o")
    sel.register(p.stderr, selectors.EVENT_READ, b"e")
    sel.register(conn, selectors.EVENT_READ, None)
    open_pipes, beat, exited_at = 2, time.monotonic(), None
    try:
        while open_pipes:
            for key, _ in sel.select(timeout=0.5):
                if key.data is None:  # the stand-in went away (killed by a timeout): end the target
                    if not conn.recv(1, socket.MSG_PEEK):
                        raise ConnectionError
                    continue
                data = os.read(key.fileobj.fileno(), 65536)
                if data:
                    conn.sendall(frame(key.data, data))
                else:
                    sel.unregister(key.fileobj)
                    open_pipes -= 1
            if time.monotonic() - beat >= HEARTBEAT:
                conn.sendall(frame(b"h"))
                beat = time.monotonic()
            if exited_at is None and p.poll() is not None:
                exited_at = time.monotonic()
            if exited_at is not None and time.monotonic() - exited_at > 5:
                break  # a grandchild keeps the pipes open: the target itself has ended
        p.wait()
        code = p.returncode if p.returncode >= 0 else 128 - p.returncode
        if full:
            text = os.read(code_r, 32).decode().strip()
            code = int(text) if text.isdigit() else code
        conn.sendall(frame(b"x", struct.pack(">I", code & 0xFFFFFFFF)))
    except (ConnectionError, OSError):
        kill(p)
    finally:
        sel.close()
        if code_r is not None:
            os.close(code_r)
        p.stdout.close()
        p.stderr.close()
        with children_lock:
            children.discard(p)


def feed(pipe, data):
    try:
        pipe.write(data)
        pipe.close()
    except OSError:
        pass


def kill(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except OSError:
        pass
    p.wait()


# ---------------------------------------------------------------- the two modes

def call(argv):
    """call MODULE FUNC MACHINE CODEFD -- ARGS: run a stand-in's function, write its full exit code
    on CODEFD, exit with its low 8 bits."""
    module, func, machine, fd = argv[:4]
    args = argv[5:] if len(argv) > 4 and argv[4] == "--" else argv[4:]
    from simlib import common
    common.FULL_EXIT_CODES = True
    mod = __import__("simlib." + module, fromlist=[func])
    code = getattr(mod, func)(machine, args) or 0
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(int(fd), b"%d" % code)
    return code & 0xFF


def echo(argv):
    """echo ARGS: print the current folder, each argument on a line, then stdin (a test target:
    what a Windows-side stand-in sent, as the Unix side received it)."""
    out = sys.stdout.buffer
    out.write(os.getcwd().encode() + b"\n")
    for a in argv:
        out.write(a.encode("utf-8", "surrogateescape") + b"\n")
    out.write(sys.stdin.buffer.read())
    out.flush()
    return 0


def serve(argv):
    opts = {"info": None, "watch_pid": None, "max_seconds": 1200.0,
            "wineprefix": os.environ.get("WINEPREFIX") or os.path.expanduser("~/.wine")}
    allowed = {}
    it = iter(argv)
    for a in it:
        if a == "--allow":
            name, _, cmd = next(it).partition("=")
            allowed[name] = shlex.split(cmd)
        elif a in ("--info", "--watch-pid", "--max-seconds", "--wineprefix"):
            opts[a[2:].replace("-", "_")] = next(it)
        else:
            sys.stderr.write("winforward: unknown argument %s\n" % a)
            return 2
    if not opts["info"]:
        sys.stderr.write("winforward: --info FILE is required\n")
        return 2
    token = secrets.token_hex(16)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    tmp = opts["info"] + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"port": srv.getsockname()[1], "token": token}, f)
    os.replace(tmp, opts["info"])
    deadline = time.monotonic() + float(opts["max_seconds"])
    watch = int(opts["watch_pid"]) if opts["watch_pid"] else None
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    srv.settimeout(0.5)
    while not stop and time.monotonic() < deadline and (watch is None or alive(watch)):
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        threading.Thread(target=handle, args=(conn, token.encode(), allowed, opts["wineprefix"]),
                         daemon=True).start()
    srv.close()
    with children_lock:
        for p in list(children):
            kill(p)
    return 0


def handle(conn, token, allowed, prefix):
    with conn:
        serve_one(conn, token, allowed, prefix)


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def main(argv):
    if argv[:1] == ["call"]:
        return call(argv[1:])
    if argv[:1] == ["echo"]:
        return echo(argv[1:])
    if argv[:1] == ["serve"]:
        return serve(argv[1:])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
