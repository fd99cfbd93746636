#!/usr/bin/env python3
"""Server-sent-events client for `cargo xtask bench` (the proxy workload).

Usage: sse_client.py URL [CAFILE]

GETs URL (https) through $https_proxy when it is set (CONNECT, as the sandbox's proxy wants),
else straight; trusts CAFILE, or the default trust store (SSL_CERT_FILE: inside the sandbox, the
session's bundle). For each `data: SENT` line of the stream prints "SENT RECEIVED", RECEIVED being
time.monotonic_ns() (CLOCK_MONOTONIC on Linux) right after the bytes holding it were read.
"""

import http.client
import os
import ssl
import sys
import time
from urllib.parse import urlparse


def main():
    url = urlparse(sys.argv[1])
    ctx = ssl.create_default_context(cafile=sys.argv[2] if len(sys.argv) > 2 else None)
    proxy = os.environ.get("https_proxy") or os.environ.get("HTTPS_PROXY")
    if proxy:
        p = urlparse(proxy)
        conn = http.client.HTTPSConnection(p.hostname, p.port, context=ctx)
        conn.set_tunnel(url.hostname, url.port)
    else:
        conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx)
    conn.request("GET", url.path + ("?" + url.query if url.query else ""),
                 headers={"Accept": "text/event-stream"})
    resp = conn.getresponse()
    if resp.status != 200:
        sys.exit("sse_client: HTTP %d" % resp.status)
    out = []
    buf = b""
    while True:
        # read1: whatever the current chunk has (readline would wait for more chunks)
        data = resp.read1(65536)
        if not data:
            break
        now = time.monotonic_ns()
        buf += data
        *lines, buf = buf.split(b"\n")
        out.extend((int(l[6:]), now) for l in lines if l.startswith(b"data: "))
    for sent, received in out:
        print(sent, received)


if __name__ == "__main__":
    main()
