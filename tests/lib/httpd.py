#!/usr/bin/env python3
"""A small HTTP/1.1 server for upkit.http's protocol corners (Python 3 stdlib only).

  httpd.py [--port 0] [--tls-cert FILE --tls-key FILE] [--watch-pid PID]

Prints its base URL as the first line of stdout, then serves on 127.0.0.1 until
SIGTERM (or until the watched process is gone). Routes:

  /echo                        any method: JSON {method, path, query, headers, body, peer port}
  /status/N?body=&retry_after= that status (and Retry-After)
  /flaky/KEY?fails=&status=&retry_after=
                               the first `fails` requests for KEY get `status`, then 200 {attempts}
  /count/KEY                   how many requests /flaky/KEY has seen: {count}
  /redirect?to=URL&code=302    a redirect; /redirect/N chains N redirects to /echo
  /chunked?parts=N             a chunked reply of N lines
  /slow?delay=S                waits S seconds, then 200
  /data?size=N                 N bytes of pattern (byte i = i % 251); honours Range: bytes=A-
  /file/KEY?size=N&drop=K&norange=1
                               like /data, but the first request for KEY drops the connection
                               after K bytes of the body; norange ignores Range
  /stall?after=K               sends K bytes of a longer body, then stalls
  /drop                        closes the connection without answering
  /badjson                     200 application/json that is not JSON
"""

import argparse
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNTS = {}
LOCK = threading.Lock()


def pattern(start, end):
    return bytes(i % 251 for i in range(start, end))


def bump(key):
    with LOCK:
        COUNTS[key] = COUNTS.get(key, 0) + 1
        return COUNTS[key]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body=b"", ctype="text/plain", headers=None):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reply_json(self, status, obj, headers=None):
        self.reply(status, json.dumps(obj), "application/json", headers)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def range_start(self):
        r = self.headers.get("Range", "")
        if r.startswith("bytes=") and r.endswith("-"):
            return int(r[6:-1])
        return 0

    def send_data(self, size, drop=None, honour_range=True):
        start = self.range_start() if honour_range else 0
        if start >= size and start > 0:
            self.reply(416, "range not satisfiable", headers={"Content-Range": "bytes */%d" % size})
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, size - 1, size))
        self.end_headers()
        if self.command == "HEAD":
            return
        end = size if drop is None else min(size, start + drop)
        pos = start
        while pos < end:
            n = min(65536, end - pos)
            self.wfile.write(pattern(pos, pos + n))
            pos += n
        if drop is not None and end < size:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        parts = [p for p in url.path.split("/") if p]
        body = self.read_body()
        head = parts[0] if parts else ""
        if head == "echo":
            self.reply_json(200, {"method": self.command, "path": url.path, "query": q, "target": self.path,
                                  "headers": {k.lower(): v for k, v in self.headers.items()},
                                  "body": body.decode("utf-8", "replace"),
                                  "peer": self.client_address[1]})
        elif head == "status":
            code = int(parts[1])
            hdrs = {"Retry-After": q["retry_after"]} if "retry_after" in q else {}
            self.reply(code, q.get("body", "status %d" % code), headers=hdrs)
        elif head == "flaky":
            n = bump(parts[1])
            if n <= int(q.get("fails", 2)):
                hdrs = {"Retry-After": q["retry_after"]} if "retry_after" in q else {}
                self.reply(int(q.get("status", 503)), "try again", headers=hdrs)
            else:
                self.reply_json(200, {"attempts": n})
        elif head == "count":
            with LOCK:
                self.reply_json(200, {"count": COUNTS.get(parts[1], 0)})
        elif head == "redirect":
            if len(parts) > 1:
                n = int(parts[1])
                to = "/echo" if n <= 1 else "/redirect/%d" % (n - 1)
                self.reply(302, "", headers={"Location": to})
            else:
                self.reply(int(q.get("code", 302)), "", headers={"Location": q["to"]})
        elif head == "chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(int(q.get("parts", 3))):
                chunk = ("part %d\n" % i).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif head == "slow":
            time.sleep(float(q.get("delay", 2)))
            self.reply(200, "slow")
        elif head == "data":
            self.send_data(int(q.get("size", 1024)))
        elif head == "file":
            first = bump("file/" + parts[1]) == 1
            drop = int(q["drop"]) if first and "drop" in q else None
            self.send_data(int(q.get("size", 1024)), drop, honour_range=not q.get("norange"))
        elif head == "stall":
            after = int(q.get("after", 100))
            self.send_response(200)
            self.send_header("Content-Length", str(after * 10))
            self.end_headers()
            self.wfile.write(pattern(0, after))
            self.wfile.flush()
            time.sleep(10)
            self.close_connection = True
        elif head == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
        elif head == "badjson":
            self.reply(200, "{not json", "application/json")
        else:
            self.reply(404, "no route " + url.path)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any


def watch(pid):
    while True:
        time.sleep(0.5)
        try:
            os.kill(pid, 0)
        except OSError:
            os._exit(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--watch-pid", type=int)
    a = ap.parse_args()
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 128
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    scheme = "http"
    if a.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        scheme = "https"
    if a.watch_pid:
        threading.Thread(target=watch, args=(a.watch_pid,), daemon=True).start()
    print("%s://127.0.0.1:%d" % (scheme, srv.server_address[1]), flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
