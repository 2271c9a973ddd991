#!/usr/bin/env python3
"""An HTTP proxy in front of s3s-fs that misbehaves on demand, for tests/integration/t_worker_faults.sh.

    faultproxy.py LISTEN_PORT UPSTREAM_PORT MODE_FILE

MODE_FILE is read on every request:
    pass          forward unchanged (also when the file is missing or empty)
    slow SECONDS  forward, so S3 really acts, then hold the answer back SECONDS
    error STATUS  answer STATUS with an S3 error body, without forwarding

The Host header is forwarded as received, so s3s-fs still verifies the SigV4 signature the
worker computed for this proxy's address.
"""
import http.client
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LISTEN_PORT, UPSTREAM_PORT, MODE_FILE = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


def mode():
    try:
        with open(MODE_FILE) as f:
            words = f.read().split()
    except FileNotFoundError:
        words = []
    return words or ["pass"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, headers, body):
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        # A HEAD answer has no body but announces the object's length: pass that on.
        length = dict((k.lower(), v) for k, v in headers).get("content-length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def relay(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        how = mode()
        if how[0] == "error":
            status = int(how[1])
            xml = b"<?xml version=\"1.0\"?><Error><Code>InternalError</Code><Message>injected fault</Message></Error>"
            return self.answer(status, [("Content-Type", "application/xml")], xml)
        upstream = http.client.HTTPConnection("127.0.0.1", UPSTREAM_PORT, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body, headers=headers)
            reply = upstream.getresponse()
            data = reply.read()
        except OSError as e:
            return self.answer(502, [], f"upstream unreachable: {e}".encode())
        finally:
            upstream.close()
        if how[0] == "slow":
            time.sleep(float(how[1]))
        self.answer(reply.status, reply.getheaders(), data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = relay


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", LISTEN_PORT), Handler).serve_forever()
