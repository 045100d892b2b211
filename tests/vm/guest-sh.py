#!/usr/bin/env python3
"""Runs one shell command in a test guest through its serial console socket (tests/vm/init
runs a shell there): guest-sh.py SOCKET TIMEOUT CMD. Prints the command's output and exits
with its status. With CMD "wait-up" it waits (up to TIMEOUT s) until the guest answers."""
import re, socket, sys, time

sock_path, timeout, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3]
deadline = time.time() + timeout


def connect():
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock_path)
            return s
        except OSError:
            if time.time() > deadline:
                sys.exit("guest-sh: no console at " + sock_path)
            time.sleep(0.2)


def run(s, command, until):
    tag = "XVS-SH-%d" % int(time.time() * 1e6)
    quoted = command.replace("'", "'\\''")
    s.sendall(("timeout %d sh -c '%s' 2>&1; echo \"%s $?\"\n" % (max(1, int(until - time.time())), quoted, tag)).encode())
    buf = b""
    s.settimeout(0.5)
    while time.time() < until:
        try:
            d = s.recv(65536)
            if not d:
                break
            buf += d
        except socket.timeout:
            continue
        # The status follows the tag; an echo of the command line (before the guest's init
        # turned echo off) has `$?` there instead.
        m = re.search((tag + r" (\d+)\r?\n").encode(), buf)
        if m:
            return int(m.group(1)), buf[:m.start()].decode(errors="replace").replace("\r", "")
    return None, buf.decode(errors="replace")


s = connect()
if cmd == "wait-up":
    while time.time() < deadline:
        code, _ = run(s, "test -e /sys/class/net/eth0 && echo up", min(deadline, time.time() + 3))
        if code == 0:
            sys.exit(0)
    sys.exit("guest-sh: guest did not come up")
code, out = run(s, cmd, deadline)
sys.stdout.write(out)
sys.exit(1 if code is None else code)
