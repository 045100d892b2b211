"""Counts UDP datagrams to HOST:PORT until IDLE seconds pass without one (or LIMIT seconds in
all), then prints the count."""
import socket, sys, time
host, port, idle, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind((host, port))
print("READY", flush=True)
s.settimeout(0.2)
n, start, last = 0, time.time(), None
while time.time() - start < limit:
    try:
        s.recv(2048)
        n += 1
        last = time.time()
    except socket.timeout:
        if last is not None and time.time() - last > idle:
            break
print(n, flush=True)
