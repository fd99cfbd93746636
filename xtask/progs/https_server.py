#!/usr/bin/env python3
"""HTTPS origin for `cargo xtask bench` (the proxy workload).

Usage: https_server.py CERT KEY PORT_FILE

Serves, over HTTP/1.1 with keep-alive on 127.0.0.1 (a free port, written to PORT_FILE):
GET /small (256 bytes) and GET /big (64 MiB), from memory; and GET /sse?n=N&gap_ms=G, a
server-sent-events stream (chunked) of N events G ms apart, each carrying the time it was sent,
`data: <time.monotonic_ns()>` (CLOCK_MONOTONIC on Linux), taken just before its chunk is written.
"""

import os
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

SMALL = b"x" * 256
BIG = os.urandom(1 << 20) * 64


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as HTTP servers set it: headers and body (or events) go out in separate
    # writes, and without it Nagle holds the second back until the client's delayed ACK (40 ms)
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/sse"):
            self.sse()
            return
        body = BIG if self.path.startswith("/big") else SMALL
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        view = memoryview(body)
        for i in range(0, len(body), 1 << 20):
            self.wfile.write(view[i:i + (1 << 20)])


    def sse(self):
        q = parse_qs(urlparse(self.path).query)
        n = int(q.get("n", ["100"])[0])
        gap = int(q.get("gap_ms", ["10"])[0]) / 1000.0
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        for i in range(n):
            if i:
                time.sleep(gap)
            event = b"id: %d\ndata: %d\n\n" % (i, time.monotonic_ns())
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True


def main():
    cert, key, port_file = sys.argv[1:4]
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
