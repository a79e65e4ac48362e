"""Helpers shared by the simulator's unittest modules."""

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import octosim  # noqa: E402

OCTOSIM = os.path.join(HERE, "octosim.py")


class SimCase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="octosim-test-")
        self.procs = []
        self.services = []

    def tearDown(self):
        for m, inst in self.services:
            exe = os.path.join(m, "ProgramFiles", "OctopusDeploy", "Octopus", "Octopus.Server")
            if os.path.exists(exe):
                subprocess.run([exe, "service", "--stop", "--instance=" + inst], capture_output=True)
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait()
            for s in (p.stdout, p.stderr):
                if s:
                    s.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def create(self, version, name="main", **kw):
        return octosim.create(os.path.join(self.tmp, name), version, **kw)

    def serve(self, info, downloads=None, env=None):
        args = [sys.executable, OCTOSIM, "serve", "--home", info["home"], "--port", "0"]
        if downloads:
            args += ["--downloads", downloads]
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, **(env or {})))
        self.procs.append(p)
        line = p.stdout.readline().strip()
        if not line.startswith("http://"):
            raise AssertionError("serve did not start: %r %s" % (line, p.stderr.read()))
        return int(line.rsplit(":", 1)[1])

    def start_service(self, info, env=None):
        r = self.exe(info, "service", "--start", "--instance=" + info["instance"], env=env)
        self.services.append((info["machine"], info["instance"]))
        self.assertEqual(r.returncode, 0, r.stderr)
        from simlib import winsvc
        self.assertTrue(winsvc.wait_api(info["port"]), "the service did not answer on /api")
        return info["port"]

    def start_fails(self, info, text):
        """`service --start` returns, but the server stops during its start-up: /api never answers,
        the service is STOPPED and the log says why."""
        r = self.exe(info, "service", "--start", "--instance=" + info["instance"])
        self.services.append((info["machine"], info["instance"]))
        deadline = time.time() + 20
        while self.service_pid(info) and time.time() < deadline:
            time.sleep(0.1)
        self.assertIsNone(self.service_pid(info))
        with open(os.path.join(info["home"], "Logs", "OctopusServer.txt")) as f:
            self.assertIn(text, f.read())
        return r

    def service_pid(self, info):
        from simlib import winsvc
        return winsvc.pid_of(info["machine"], info["instance"])

    def run_tool(self, path, *args, env=None):
        return subprocess.run([path] + list(args), capture_output=True, text=True,
                              env=dict(os.environ, **(env or {})))

    def exe(self, info, *args, env=None):
        return subprocess.run([info["server_exe"]] + list(args), capture_output=True, text=True,
                              env=dict(os.environ, **(env or {})))

    def msiexec(self, info, *args, env=None):
        return subprocess.run([info["msiexec"]] + list(args), capture_output=True, text=True,
                              env=dict(os.environ, **(env or {})))

    def msi(self, info, version):
        return os.path.join(info["downloads"], "Octopus.%s-x64.msi" % version)

    def faults(self, info, **faults):
        with open(os.path.join(info["machine"], "faults.json"), "w") as f:
            json.dump(faults, f)


class Api:
    """A keep-alive JSON client for one server."""

    def __init__(self, port, key=None):
        self.port = port
        self.key = key
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method, path, body=None, key=None, headers=None):
        h = dict(headers or {})
        k = key if key is not None else self.key
        if k:
            h["X-Octopus-ApiKey"] = k
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=data, headers=h)
                r = self.conn.getresponse()
                raw = r.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        ctype = r.getheader("Content-Type", "")
        obj = json.loads(raw) if raw and ctype.startswith("application/json") else raw
        return r.status, dict(r.getheaders()), obj

    def get(self, path, **kw):
        s, h, o = self.call("GET", path, **kw)
        if s != 200:
            raise AssertionError("GET %s -> %d %r" % (path, s, o))
        return o

    def put(self, path, body, **kw):
        return self.call("PUT", path, body, **kw)

    def post(self, path, body, **kw):
        return self.call("POST", path, body, **kw)

    def upload(self, path, field, filename, data, key=None):
        """POST multipart/form-data with one file (as .NET's MultipartFormDataContent sends it)."""
        boundary = "octosim-" + os.urandom(8).hex()
        body = (("--%s\r\nContent-Disposition: form-data; name=%s; filename=%s\r\n"
                 "Content-Type: multipart/form-data\r\n\r\n" % (boundary, field, filename)).encode()
                + data + ("\r\n--%s--\r\n" % boundary).encode())
        h = {"Content-Type": "multipart/form-data; boundary=" + boundary,
             "X-Octopus-ApiKey": key if key is not None else self.key}
        self.conn.request("POST", path, body=body, headers=h)
        r = self.conn.getresponse()
        raw = r.read()
        return r.status, json.loads(raw) if raw else None

    def wait_task(self, path, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            t = self.get(path)
            if t["IsCompleted"]:
                return t
            time.sleep(0.1)
        raise AssertionError("task %s did not finish" % path)

    def close(self):
        self.conn.close()
