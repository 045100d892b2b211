"""A TCP server that answers every connection with a fixed banner, then exits after N."""
import socket, sys
host, port, banner, count = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(8)
s.settimeout(30)
for _ in range(count):
    c, _ = s.accept()
    c.sendall(banner + b"\n")
    c.close()
