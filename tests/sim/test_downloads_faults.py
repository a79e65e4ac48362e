import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import unittest

from simtest import OCTOSIM, Api, SimCase


def raw_get(port, path, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


class DownloadSite(SimCase):
    def site(self, env=None, machine=None):
        d = os.path.join(self.tmp, "dl")
        args = [sys.executable, OCTOSIM, "download-site", "--dir", d, "--port", "0"]
        if machine:
            args += ["--machine", machine]
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, **(env or {})))
        self.procs.append(p)
        return d, int(p.stdout.readline().strip().rsplit(":", 1)[1])

    def test_feed_digests_and_ranges(self):
        d, port = self.site()
        s, _, body = raw_get(port, "/download/upgrade/v3")
        self.assertEqual(s, 200)
        feed = json.loads(body)
        versions = [e["Version"] for e in feed]
        for v in ("3.17.14", "2019.1.5", "2021.1.7687", "2023.4.8166", "2024.4.7000", "2025.4.10700"):
            self.assertIn(v, versions)
        self.assertEqual(set(feed[0]), {"Version", "Released"})  # nothing the real feed is not known to have
        self.assertEqual(raw_get(port, "/octopus/SHA256SUMS")[0], 404)  # no published digests
        with open(os.path.join(d, "SHA256SUMS")) as f:  # the tests' own copy
            sums = dict(reversed(line.split("  ")) for line in f.read().splitlines())
        e = dict(feed[1], Url="/octopus/Octopus.%s-x64.msi" % feed[1]["Version"])
        s, h, data = raw_get(port, e["Url"])
        self.assertEqual(s, 200)
        self.assertEqual(h["Accept-Ranges"], "bytes")
        digest = hashlib.sha256(data).hexdigest()
        self.assertEqual(digest, sums["Octopus.%s-x64.msi" % e["Version"]])
        s, h, part = raw_get(port, e["Url"], {"Range": "bytes=1000-"})
        self.assertEqual(s, 206)
        self.assertEqual(h["Content-Range"], "bytes 1000-%d/%d" % (len(data) - 1, len(data)))
        self.assertEqual(part, data[1000:])
        s, _, part = raw_get(port, e["Url"], {"Range": "bytes=10-19"})
        self.assertEqual((s, part), (206, data[10:20]))
        s, _, part = raw_get(port, e["Url"], {"Range": "bytes=-5"})
        self.assertEqual(part, data[-5:])
        s, h, _ = raw_get(port, e["Url"], {"Range": "bytes=%d-" % len(data)})
        self.assertEqual(s, 416)
        self.assertEqual(raw_get(port, "/octopus/nope.msi")[0], 404)

    def test_broken_download_then_resume(self):
        d, port = self.site(env={"OCTOSIM_FAULT_DOWNLOAD_BREAK_AFTER": "100000",
                                 "OCTOSIM_FAULT_DOWNLOAD_BREAK_COUNT": "1"})
        path = "/octopus/Octopus.2021.1.7687-x64.msi"
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", path)
        r = c.getresponse()
        total = int(r.getheader("Content-Length"))
        got = b""
        with self.assertRaises(http.client.IncompleteRead) as cm:
            got = r.read()
        got = cm.exception.partial
        c.close()
        self.assertEqual(len(got), 100000)
        self.assertLess(len(got), total)
        s, _, rest = raw_get(port, path, {"Range": "bytes=%d-" % len(got)})
        self.assertEqual(s, 206)
        with open(os.path.join(d, "Octopus.2021.1.7687-x64.msi"), "rb") as f:
            self.assertEqual(got + rest, f.read())

    def test_serve_with_downloads_mounts_the_site(self):
        info = self.create("3.17.14")
        port = self.serve(info, downloads=info["downloads"])
        s, _, body = raw_get(port, "/download/upgrade/v3")
        self.assertEqual(s, 200)
        self.assertTrue(json.loads(body))


class RestFaults(SimCase):
    def test_first_n_503_with_retry_after_then_ok(self):
        info = self.create("3.17.14")
        self.faults(info, rest_error_first=2, rest_error_status=503, retry_after=2)
        port = self.serve(info)
        api = Api(port, info["api_key"])
        try:
            for _ in range(2):
                s, h, body = api.call("GET", "/api/machines")
                self.assertEqual(s, 503)
                self.assertEqual(h["Retry-After"], "2")
                self.assertIn("ErrorMessage", body)
            self.assertEqual(api.call("GET", "/api/machines")[0], 200)
        finally:
            api.close()

    def test_service_start_is_not_counted_against_error_faults(self):
        info = self.create("3.17.14")
        self.faults(info, rest_error_first=1, rest_error_status=503)
        api = Api(self.start_service(info), info["api_key"])
        try:
            self.assertEqual(api.call("GET", "/api/machines")[0], 503)
            self.assertEqual(api.call("GET", "/api/machines")[0], 200)
        finally:
            api.close()

    def test_429_rate_and_slow_and_dropped(self):
        info = self.create("3.17.14")
        port = self.serve(info, env={"OCTOSIM_FAULTS": json.dumps({"rest_error_rate": 1.0, "rest_error_status": 429})})
        api = Api(port, info["api_key"])
        try:
            s, h, _ = api.call("GET", "/api/machines")
            self.assertEqual(s, 429)
            self.assertIn("Retry-After", h)
        finally:
            api.close()
        port = self.serve(info)
        self.assertEqual(raw_get(port, "/api/machines", {"X-Octopus-ApiKey": info["api_key"]})[0], 200)
        self.faults(info, rest_delay_ms=300, rest_drop_first=1)
        time.sleep(0.7)  # a running server re-reads faults.json twice a second
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionResetError)):
            raw_get(port, "/api/machines", {"X-Octopus-ApiKey": info["api_key"]})
        t = time.time()
        s, _, _ = raw_get(port, "/api/machines", {"X-Octopus-ApiKey": info["api_key"]})
        self.assertEqual(s, 200)
        self.assertGreaterEqual(time.time() - t, 0.3)


class Sandbox(SimCase):
    def test_sandbox_starts_and_stops_its_service(self):
        sb = os.path.join(self.tmp, "sb")
        p = subprocess.Popen([sys.executable, OCTOSIM, "sandbox", "--dir", sb],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        out = ""
        while "Press Ctrl-C" not in out:
            line = p.stdout.readline()
            if not line:
                self.fail("sandbox ended early: " + p.stderr.read())
            out += line
        with open(os.path.join(sb, "sandbox.json")) as f:
            ready = json.load(f)
        info = ready["main"]
        self.assertIn("api_key_file = ", out)
        with open(os.path.join(sb, "octopus.key")) as f:
            self.assertEqual(f.read().strip(), info["api_key"])
        with open(os.path.join(sb, "pids", "download-site.pid")) as f:
            site_pid = int(f.read())
        api = Api(info["port"], info["api_key"])
        self.assertEqual(api.get("/api")["Version"], "3.17.14")
        api.close()
        pid = self.service_pid(info)
        self.assertIsNotNone(pid)
        second = subprocess.run([sys.executable, OCTOSIM, "sandbox", "--dir", sb], capture_output=True, text=True,
                                timeout=30)
        self.assertEqual(second.returncode, 1)
        self.assertIn("a sandbox (pid %d) is running in" % p.pid, second.stderr)
        os.kill(p.pid, signal.SIGTERM)
        self.assertEqual(p.wait(20), 0)
        from simlib.winsvc import alive
        self.assertFalse(alive(pid))
        self.assertFalse(alive(site_pid))
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", info["port"]), timeout=1).close()

    def test_sandbox_refuses_a_folder_that_is_not_a_sandbox(self):
        sb = os.path.join(self.tmp, "mine")
        os.makedirs(sb)
        with open(os.path.join(sb, "notes.txt"), "w") as f:
            f.write("keep me")
        r = subprocess.run([sys.executable, OCTOSIM, "sandbox", "--dir", sb], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("is not a sandbox's folder", r.stderr)
        self.assertEqual(os.listdir(sb), ["notes.txt"])


if __name__ == "__main__":
    unittest.main()
