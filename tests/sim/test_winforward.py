"""tests/sim/winforward.py, the Unix side of the Windows-side stand-ins, without Wine: a client
speaking forward.exe's protocol (tests/windows/forward.c) gets the full exit codes, refusals, the
translated paths and stdin; the forwarder kills a target whose stand-in went away and exits with
the process it watches. tests/windows/octopus.lua tests the same through Wine."""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
FORWARD = os.path.join(HERE, "winforward.py")
OCTOSIM = os.path.join(HERE, "octosim.py")


def field(b):
    return struct.pack(">I", len(b)) + b


def request(port, token, target, args, cwd="Z:\\", stdin=None, keep=False):
    """-> (stdout, stderr, exit code or None, refusal message or None), or the open socket (keep)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    msg = b"UPKFWD1\n" + field(token.encode()) + field(target.encode()) + field(cwd.encode())
    msg += struct.pack(">I", len(args)) + b"".join(field(a.encode()) for a in args)
    msg += struct.pack(">I", 0xFFFFFFFF) if stdin is None else field(stdin)
    s.sendall(msg)
    if keep:
        return s
    out, err = b"", b""
    with s:
        while True:
            head = recv(s, 5)
            body = recv(s, struct.unpack(">I", head[1:])[0])
            kind = head[:1]
            if kind == b"o":
                out += body
            elif kind == b"e":
                err += body
            elif kind == b"x":
                return out.decode(), err.decode(), struct.unpack(">I", body)[0], None
            elif kind == b"f":
                return out.decode(), err.decode(), struct.unpack(">I", body[:4])[0], body[4:].decode()


def recv(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise EOFError
        b += chunk
    return b


class WinForward(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="winforward-test-")
        # a Wine prefix's drive folder: Z: is /
        os.makedirs(os.path.join(cls.tmp, "prefix", "dosdevices"))
        os.symlink("/", os.path.join(cls.tmp, "prefix", "dosdevices", "z:"))
        cls.watched = subprocess.Popen(["sleep", "120"])
        info = os.path.join(cls.tmp, "forward.json")
        cls.fwd = subprocess.Popen([sys.executable, FORWARD, "serve", "--info", info, "--watch-pid",
                                    str(cls.watched.pid), "--max-seconds", "300", "--wineprefix",
                                    os.path.join(cls.tmp, "prefix"), "--allow", "cat=cat",
                                    "--allow", "args=%s -c 'import os,sys; print(os.getcwd()); print(*sys.argv[1:], sep=chr(10))'"
                                    % sys.executable,
                                    "--allow", "sleeper=sh -c 'echo $$; exec sleep 60'",
                                    "--allow", "missing=/nonexistent/program"])
        for _ in range(100):
            if os.path.exists(info):
                break
            time.sleep(0.05)
        with open(info) as f:
            cls.info = json.load(f)
        cls.port, cls.token = cls.info["port"], cls.info["token"]
        out = subprocess.run([sys.executable, OCTOSIM, "machine", "--root", os.path.join(cls.tmp, "m")],
                             capture_output=True, check=True).stdout
        cls.m = json.loads(out)

    @classmethod
    def tearDownClass(cls):
        for p in (cls.fwd, cls.watched):
            if p.poll() is None:
                p.kill()
            p.wait()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def call(self, target, *args, **kw):
        return request(self.port, self.token, target, list(args), **kw)

    def test_info_file_is_private(self):
        self.assertEqual(os.stat(os.path.join(self.tmp, "forward.json")).st_mode & 0o777, 0o600)

    def test_full_exit_codes(self):
        faults = os.path.join(self.m["machine"], "faults.json")
        msi = os.path.join(self.tmp, "none.msi")
        out, err, code, refused = self.call(self.m["msiexec"], "/i", "Z:" + msi.replace("/", "\\"), "/quiet")
        self.assertIsNone(refused)
        self.assertEqual(code, 1619)
        self.assertIn("could not be opened: " + msi, err)
        _, _, code, _ = self.call(self.m["sc"], "query", "NoSuchService")
        self.assertEqual(code, 1060)
        # the Unix stand-in itself still exits with the low 8 bits
        self.assertEqual(subprocess.run([self.m["sc"], "query", "NoSuchService"], capture_output=True).returncode,
                         1060 & 0xFF)
        with open(faults, "w") as f:
            json.dump({"msi_exit": 3010}, f)
        try:
            subprocess.run([sys.executable, OCTOSIM, "downloads", "--dir", os.path.join(self.tmp, "dl")],
                           capture_output=True, check=True)
            pkg = os.path.join(self.tmp, "dl", "Octopus.3.17.14-x64.msi")
            _, _, code, _ = self.call(self.m["msiexec"], "/i", pkg, "/quiet")
            self.assertEqual(code, 3010)
        finally:
            os.unlink(faults)

    def test_paths_are_translated(self):
        d = os.path.join(self.tmp, "a b")
        os.makedirs(d, exist_ok=True)
        standin = os.path.join(d, "Octopus.Server.exe")
        with open(standin + ".forward", "w") as f:
            f.write("port=1\ntoken=x\ntarget=%s\n" % self.m["server_exe"])
        w = "Z:" + d.replace("/", "\\")
        out, _, code, _ = self.call("program:args", w + "\\x.txt", "Z:/etc", "--config=" + w, "/quiet",
                                    w + "\\Octopus.Server.exe", standin, "C:\\nowhere", cwd=w)
        self.assertEqual(code, 0)
        self.assertEqual(out.splitlines(), [d, d + "/x.txt", "/etc", "--config=" + d, "/quiet",
                                            self.m["server_exe"], self.m["server_exe"], "C:\\nowhere"])

    def test_stdin(self):
        out, _, code, _ = self.call("program:cat", stdin=b"line one\nline two\n")
        self.assertEqual((out, code), ("line one\nline two\n", 0))
        out, _, code, _ = self.call("program:cat")
        self.assertEqual((out, code), ("", 0))

    def test_refusals(self):
        for target, why in ((os.path.join(self.tmp, "gone", "Octopus.Server"), "does not exist"), ("/bin/sh", "not a stand-in"),
                            ("program:nope", "not one this forwarder"), ("relative", "not an absolute"),
                            ("program:missing", "cannot start /nonexistent/program")):
            _, _, code, refused = self.call(target, "version")
            self.assertIsNotNone(refused, target)
            self.assertIn(why, refused)
        _, _, code, refused = request(self.port, "0" * 32, self.m["sc"], ["query", "x"])
        self.assertEqual(refused, "wrong token")

    def test_target_killed_when_the_standin_goes_away(self):
        s = request(self.port, self.token, "program:sleeper", [], keep=True)
        head = recv(s, 5)
        pid = int(recv(s, struct.unpack(">I", head[1:])[0]).decode())
        s.close()
        for _ in range(60):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            self.fail("the target %d still runs" % pid)

    def test_zz_exits_with_the_watched_process(self):
        self.watched.send_signal(signal.SIGTERM)
        self.watched.wait()
        self.assertEqual(self.fwd.wait(10), 0)


if __name__ == "__main__":
    unittest.main()
