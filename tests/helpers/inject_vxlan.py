"""Sends hand-made VXLAN packets from this host's kernel to a VTEP: python3 inject_vxlan.py
SRC_IP DST_IP VNI FLAGS COUNT. The inner frame is a broadcast from 02:00:00:00:00:99."""
import socket, struct, sys
src, dst, vni, flags, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4], 0), int(sys.argv[5])
inner = b"\xff" * 6 + bytes.fromhex("020000000099") + b"\x08\x00" + bytes(46)
hdr = struct.pack("!B3sI", flags, b"\0\0\0", vni << 8)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
for _ in range(count):
    s.sendto(hdr + inner, (dst, 4789))
