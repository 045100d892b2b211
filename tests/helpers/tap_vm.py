"""Plays a VM behind a tap device: opens the tap fd (creating the tap), waits for GO on
stdin, then ARPs for and pings a peer through it; prints the echo replies it got.

usage: tap_vm.py TAPNAME MY_MAC MY_IP PEER_IP COUNT"""
import fcntl, os, select, struct, sys, time

TUNSETIFF, IFF_TAP, IFF_NO_PI = 0x400454CA, 0x0002, 0x1000
name, my_mac, my_ip, peer_ip, count = sys.argv[1], bytes.fromhex(sys.argv[2].replace(":", "")), sys.argv[3], sys.argv[4], int(sys.argv[5])
ip4 = lambda s: bytes(int(x) for x in s.split("."))
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
print("READY", flush=True)
sys.stdin.readline()

def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF

def recv(deadline):
    while time.time() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            yield os.read(fd, 4096)

# ARP for the peer
arp = b"\xff" * 6 + my_mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + my_mac + ip4(my_ip) + bytes(6) + ip4(peer_ip)
peer_mac = None
for attempt in range(10):
    os.write(fd, arp + bytes(18))
    for f in recv(time.time() + 1):
        if f[12:14] == b"\x08\x06" and struct.unpack("!H", f[20:22])[0] == 2 and f[28:32] == ip4(peer_ip):
            peer_mac = f[22:28]
            break
    if peer_mac:
        break
if not peer_mac:
    print("NO-ARP-REPLY", flush=True)
    sys.exit(1)
print("ARP", peer_mac.hex(":"), flush=True)
replies = 0
for seq in range(count):
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x4242, seq) + b"tap-vm-payload!!"
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), seq, 0x4000, 64, 1, 0, ip4(my_ip), ip4(peer_ip))
    iph = iph[:10] + struct.pack("!H", csum(iph)) + iph[12:]
    os.write(fd, peer_mac + my_mac + b"\x08\x00" + iph + icmp)
    for f in recv(time.time() + 1):
        if f[12:14] == b"\x08\x00" and f[23] == 1 and f[34] == 0 and struct.unpack("!H", f[40:42])[0] == seq:
            replies += 1
            break
print("REPLIES", replies, flush=True)
