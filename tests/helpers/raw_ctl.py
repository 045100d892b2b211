"""Sends raw bytes to a control socket and prints the reply line: raw_ctl.py SOCKET KIND."""
import json, socket, sys
path, kind = sys.argv[1], sys.argv[2]
if kind == "flood":
    # 80 idle connections, then a request: refused while they stay, served once they go
    import time
    idle = []
    for _ in range(80):
        c = socket.socket(socket.AF_UNIX)
        c.connect(path)
        idle.append(c)
    time.sleep(0.5)
    def status():
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        try:
            s.sendall(b'{"version":1,"op":"status"}\n')
        except BrokenPipeError:
            pass  # a busy xvsd answers and closes at once; the answer is still there to read
        r = json.loads(s.makefile("rb").readline())
        s.close()
        return r
    busy = status()
    for c in idle:
        c.close()
    time.sleep(0.5)
    after = status()
    print(busy.get("error"), "(%s)" % busy.get("kind"), "| then ok:", after["ok"])
    sys.exit(0)
payload = {
    "truncated": b'{"version":1,"op":"tenant_add","name":"x"\n',
    "wrong_types": b'{"version":1,"op":"tenant_add","name":5,"vni":"many"}\n',
    "unknown_op": b'{"version":1,"op":"reboot"}\n',
    "bad_version": b'{"version":99,"op":"status"}\n',
    "not_json": b"\x00\x01\x02 hello\n",
    "huge": b'{"version":1,"op":"tenant_add","name":"' + b"a" * (5 << 20) + b'"}\n',
}[kind]
s = socket.socket(socket.AF_UNIX)
s.connect(path)
try:
    s.sendall(payload)
except BrokenPipeError:
    pass
f = s.makefile("rb")
line = f.readline()
r = json.loads(line) if line else None
print("%s (%s)" % (r["error"], r.get("kind")) if r else "NO-REPLY")
