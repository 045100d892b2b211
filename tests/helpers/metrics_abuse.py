#!/usr/bin/env python3
"""Abuses xvsd's metrics endpoint the way a broken or hostile client would, and checks that
scrapes keep working. Usage: metrics_abuse.py HOST:PORT. Prints one line per check; exits 1
on the first failure."""
import socket
import sys
import time

host, port = sys.argv[1].rsplit(":", 1)
addr = (host, int(port))


def scrape(path="/metrics", method="GET", timeout=3.0):
    s = socket.create_connection(addr, timeout=timeout)
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.decode(errors="replace")


def status(resp):
    return int(resp.split(" ", 2)[1]) if resp.startswith("HTTP/1.1 ") else None


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail and not ok else ""))
    if not ok:
        sys.exit(1)


r = scrape()
check("plain scrape", status(r) == 200 and "xvs_port_packets" in r, r[:200])
check("other path is 404", status(scrape("/x")) == 404)
check("POST is 405", status(scrape(method="POST")) == 405)

# one idle client (connected, sends nothing) must not stall the next scrape
idle = socket.create_connection(addr)
t = time.time()
r = scrape(timeout=2.0)
check("scrape beside an idle client", status(r) == 200 and time.time() - t < 2.0)

# a request head far beyond the limit is refused; the daemon keeps serving
s = socket.create_connection(addr, timeout=5)
try:
    s.sendall(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
    reply = s.recv(4096).decode(errors="replace")
except (ConnectionResetError, BrokenPipeError):
    reply = ""
s.close()
check("oversized head refused", not reply.startswith("HTTP/1.1 200"), reply[:100])
check("scrape after the oversized head", status(scrape()) == 200)

# a line with no end, byte by byte, is cut off by the head timeout
s = socket.create_connection(addr, timeout=10)
s.sendall(b"GET /metr")
t = time.time()
try:
    s.recv(4096)  # closed (b"") or an error status: either way the server let go
    gone = True
except ConnectionResetError:
    gone = True
except socket.timeout:
    gone = False
check("slow client cut off by the head timeout", gone and time.time() - t < 9, f"{time.time() - t:.1f}s")
s.close()

# more idle connections than the endpoint serves at once: refused or timed out, then
# scrapes work again
many = [socket.create_connection(addr) for _ in range(40)]
time.sleep(6)  # beyond the head timeout
check("scrape after a flood of idle connections", status(scrape()) == 200)
for c in many:
    c.close()
idle.close()
print("all metrics checks passed")
