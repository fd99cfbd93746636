#!/usr/bin/env python3
"""HTTPS origin for `cargo xtask bench` (the proxy workload).

Usage: https_server.py CERT KEY PORT_FILE

Serves, over HTTP/1.1 with keep-alive on 127.0.0.1 (a free port, written to PORT_FILE):
GET /small (256 bytes) and GET /big (64 MiB), from memory.
"""

import os
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SMALL = b"x" * 256
BIG = os.urandom(1 << 20) * 64


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        body = BIG if self.path.startswith("/big") else SMALL
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        view = memoryview(body)
        for i in range(0, len(body), 1 << 20):
            self.wfile.write(view[i:i + (1 << 20)])


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
