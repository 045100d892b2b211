#!/usr/bin/env bash
# The standard two-host, two-tenant testbed in network namespaces.
#
#   usage: testbed.sh up PREFIX [xvs|kernel|kernel2|ovs|ovs-dpdk|bare|fabric] | down PREFIX | config PREFIX HOST [CORES] [veth|tap]
#
#   PREFIX-vm1 [10.0.0.1 02:..:01] -- PREFIX-p1 \                      / PREFIX-p2 -- [10.0.0.2 02:..:02] PREFIX-vm2   tenant blue, VNI 100
#   PREFIX-vm3 [10.0.0.1 02:..:01] -- PREFIX-p3  PREFIX-h1 ==== PREFIX-h2  PREFIX-p4 -- [10.0.0.2 02:..:02] PREFIX-vm4   tenant red,  VNI 200
#                          PREFIX-u1 192.168.77.1/24 (+.11) <-> PREFIX-u2 192.168.77.2/24 (+.12)   underlay veth, MTU 1600
#
# Both tenants use the same IPs and MACs. The .1/.2 addresses are the VTEP IPs; .11/.12 are
# the hosts' own addresses for non-overlay traffic. With "kernel", host 2 is the Linux kernel's
# own VTEP (a vxlan device per VNI and a bridge) instead of a port set for xvsd; with
# "kernel2" both hosts are (the kernel switch of shared/PEERS.md, for comparisons). With "ovs"
# each host runs its own Open vSwitch (userspace datapath, AF_XDP ports, VXLAN ports per
# tenant; database, sockets and logs under /tmp/xvs-ovs-PREFIX), its PMD thread on CPU1;
# "ovs-dpdk" is the same with Debian's DPDK build of OVS, every port a DPDK net_af_xdp device.
# With "bare" only the two hosts and the underlay are made: the VMs are real qemu guests on
# taps PREFIX-t1..t4 in the host namespaces (tests/vm, scripts/bench-vm.sh), and "config ...
# tap" names those taps as the VM ports.
# With "fabric" there are three hosts PREFIX-h1..h3 whose uplinks PREFIX-u1..u3 (VTEPs
# 192.168.77.1-3, host addresses .11-.13) meet on a bridge in PREFIX-fab (.30), with three
# etcd member namespaces PREFIX-e1..e3 (.21-.23) on it, and VMs vm1/vm3 on h1, vm2/vm4 on h2,
# vm5/vm6 (10.0.0.3, 02:..:03) on h3 (the etcd store's tests start etcd and xvsd themselves).
# "up" tears down whatever was there first, so it is idempotent, and so is "down".
# Every name starts with PREFIX (keep it short: interface names are at most 15 characters).
# XVS_QUEUES=N gives every veth N queues (for more than one forwarding core). For "config":
# XVS_STATIC_FDB=1 gives each tenant the other host's VM as a static entry (as the etcd store
# gives every host); XVS_FAST_PATH=false turns the XDP fast path off.
set -euo pipefail
Q=${XVS_QUEUES:-1}
VETHQ="numtxqueues $Q numrxqueues $Q"
cmd=${1:?usage: testbed.sh up|down|config PREFIX}
P=${2:?PREFIX missing}

ns() { ip netns exec "$@"; }

vm() { # vm NS HOSTNS PORT IP MAC
  local n=$1 h=$2 port=$3 ipaddr=$4 mac=$5
  ip netns add "$n"
  ip link add "${port}v" $VETHQ type veth peer name "$port" $VETHQ
  ip link set "${port}v" netns "$n"
  ip link set "$port" netns "$h"
  ns "$n" ip link set "${port}v" name eth0
  ns "$n" ip link set eth0 address "$mac" mtu 1500 up
  ns "$n" ip addr add "$ipaddr/24" dev eth0
  ns "$n" ip link set lo up
  # A userspace switch sees the frames as they are: no partial checksums, no super-frames.
  ns "$n" ethtool -K eth0 tx off tso off gso off >/dev/null 2>&1 || true
  ns "$h" ip link set "$port" mtu 1500 up
  ns "$h" ethtool -K "$port" tx off tso off gso off >/dev/null 2>&1 || true
}

up() {
  local peer=${1:-xvs}
  if [ "$peer" = fabric ]; then fabric; return 0; fi
  for h in h1 h2; do
    ip netns add "$P-$h"
    ns "$P-$h" ip link set lo up
    ns "$P-$h" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  done
  ip link add "$P-u1" $VETHQ type veth peer name "$P-u2" $VETHQ
  ip link set "$P-u1" netns "$P-h1"
  ip link set "$P-u2" netns "$P-h2"
  ns "$P-h1" ip link set "$P-u1" address 02:00:00:00:ff:01 mtu 1600 up
  ns "$P-h2" ip link set "$P-u2" address 02:00:00:00:ff:02 mtu 1600 up
  ns "$P-h1" ip addr add 192.168.77.1/24 dev "$P-u1"
  ns "$P-h1" ip addr add 192.168.77.11/24 dev "$P-u1"
  ns "$P-h2" ip addr add 192.168.77.2/24 dev "$P-u2"
  ns "$P-h2" ip addr add 192.168.77.12/24 dev "$P-u2"
  for h in h1 h2; do
    ns "$P-$h" ethtool -K "$P-u${h#h}" tx off tso off gso off >/dev/null 2>&1 || true
  done
  [ "$peer" = bare ] && return 0
  [ "$peer" = fabric ] && return 0
  vm "$P-vm1" "$P-h1" "$P-p1" 10.0.0.1 02:00:00:00:00:01
  vm "$P-vm3" "$P-h1" "$P-p3" 10.0.0.1 02:00:00:00:00:01
  vm "$P-vm2" "$P-h2" "$P-p2" 10.0.0.2 02:00:00:00:00:02
  vm "$P-vm4" "$P-h2" "$P-p4" 10.0.0.2 02:00:00:00:00:02
  for n in vm1 vm2 vm3 vm4; do ns "$P-$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1; done
  if [ "$peer" = kernel ] || [ "$peer" = kernel2 ]; then
    kernel_vtep 2 1 p2 p4
  fi
  if [ "$peer" = kernel2 ]; then
    kernel_vtep 1 2 p1 p3
  fi
  if [ "$peer" = ovs ] || [ "$peer" = ovs-dpdk ]; then
    local dpdk=""; [ "$peer" = ovs ] || dpdk=dpdk
    ovs_host 1 2 p1 p3 $dpdk
    ovs_host 2 1 p2 p4 $dpdk
  fi
}

OVSDIR=/tmp/xvs-ovs-$P
ovs_host() { # ovs_host HOST OTHER BLUEPORT REDPORT [dpdk]: ovsdb-server + ovs-vswitchd inside PREFIX-hHOST
  local h=$1 o=$2 blue=$3 red=$4 d="$OVSDIR/h$1" dpdk=${5:-} vswitchd=ovs-vswitchd
  # Debian installs the DPDK build beside the plain one, at lower priority: called by path.
  [ -z "$dpdk" ] || vswitchd=/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk
  command -v "$vswitchd" >/dev/null || { echo "testbed: $vswitchd not installed (scripts/setup.sh installs it)" >&2; exit 1; }
  mkdir -p "$d"
  export OVS_RUNDIR="$d" OVS_DBDIR="$d" OVS_LOGDIR="$d" OVS_SYSCONFDIR="$d"
  local vsctl="ovs-vsctl --db=unix:$d/db.sock --timeout=20"
  ovsdb-tool create "$d/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  ns "$P-h$h" ovsdb-server "$d/conf.db" 2>/dev/null --remote="punix:$d/db.sock" --pidfile="$d/ovsdb-server.pid" \
    --unixctl="$d/ovsdb-server.ctl" --log-file="$d/ovsdb-server.log" -vconsole:off --detach --no-chdir
  $vsctl --no-wait init
  # Both hosts share the machine: PMDs on CPU1, the traffic generator keeps CPU0 (shared/PEERS.md).
  $vsctl --no-wait set Open_vSwitch . other_config:pmd-cpu-mask=0x2
  # DPDK without huge pages or PCI devices; --legacy-mem, since OVS adds --in-memory
  # otherwise, which EAL refuses with --no-huge (shared/PEERS.md).
  [ -z "$dpdk" ] || $vsctl --no-wait set Open_vSwitch . other_config:dpdk-init=true \
    other_config:dpdk-extra="--no-huge --legacy-mem -m 1024 --no-pci --no-shconf --file-prefix $P-h$h"
  ns "$P-h$h" taskset -c 1 "$vswitchd" "unix:$d/db.sock" 2>/dev/null --pidfile="$d/ovs-vswitchd.pid" \
    --unixctl="$d/ovs-vswitchd.ctl" --log-file="$d/ovs-vswitchd.log" -vconsole:off --detach --no-chdir
  # The underlay: an AF_XDP port in a netdev bridge whose internal port holds the VTEP IP.
  ns "$P-h$h" ip addr flush dev "$P-u$h"
  # (with DPDK: each port a net_af_xdp device of its own; busy_budget=0, since the driver's
  # busy polling would run the veths' NAPI on the contended CPU and lose frames between hosts)
  port() { # port IF N: the interface options for IF, the process's Nth DPDK device
    if [ -z "$dpdk" ]; then echo "type=afxdp"; return; fi
    echo "type=dpdk options:dpdk-devargs=net_af_xdp$2,iface=$1,force_copy=1,busy_budget=0"
  }
  # (the MTU in the same transaction: reconfiguring a net_af_xdp port fails to make its socket again)
  local up_opts; up_opts=$(port "$P-u$h" 0)
  [ -z "$dpdk" ] || up_opts="$up_opts mtu_request=1600"
  $vsctl add-br "$P-phy" -- set bridge "$P-phy" datapath_type=netdev \
    -- add-port "$P-phy" "$P-u$h" -- set interface "$P-u$h" $up_opts
  ns "$P-h$h" ip link set "$P-phy" mtu 1600 up
  ns "$P-h$h" ip addr add "192.168.77.$h/24" dev "$P-phy"
  ns "$P-h$h" ip addr add "192.168.77.1$h/24" dev "$P-phy"
  for t in "100 $blue 1" "200 $red 2"; do
    set -- $t
    $vsctl add-br "$P-t$1" -- set bridge "$P-t$1" datapath_type=netdev \
      -- add-port "$P-t$1" "$P-$2" -- set interface "$P-$2" $(port "$P-$2" "$3") \
      -- add-port "$P-t$1" "$P-vx$1" -- set interface "$P-vx$1" type=vxlan \
         options:remote_ip="192.168.77.$o" options:key="$1"
  done
  for i in "$P-u$h" "$P-$blue" "$P-$red"; do
    local err
    err=$($vsctl get interface "$i" error 2>/dev/null || true)
    case "$err" in ""|"[]") ;; *) echo "testbed: OVS port $i: $err" >&2; exit 1 ;; esac
  done
}

kernel_vtep() { # kernel_vtep HOST OTHER BLUEPORT REDPORT: bridge + vxlan per VNI
  local h=$1 o=$2
  for t in "100 $3" "200 $4"; do
    set -- $t
    ns "$P-h$h" ip link add "$P-br$1" type bridge stp_state 0
    ns "$P-h$h" ip link add "$P-vx$1" type vxlan id "$1" local "192.168.77.$h" remote "192.168.77.$o" dstport 4789 dev "$P-u$h"
    ns "$P-h$h" ip link set "$P-vx$1" mtu 1500 master "$P-br$1" up
    ns "$P-h$h" ip link set "$P-$2" master "$P-br$1" up
    ns "$P-h$h" ip link set "$P-br$1" up
  done
}

fabric() { # three hosts and three etcd members on one underlay bridge (the etcd tests)
  ip netns add "$P-fab"
  ns "$P-fab" ip link add br0 type bridge stp_state 0
  ns "$P-fab" ip link set br0 up
  ns "$P-fab" ip addr add 192.168.77.30/24 dev br0
  ns "$P-fab" ip link set lo up
  local i
  for i in 1 2 3; do
    ip netns add "$P-h$i"
    ns "$P-h$i" ip link set lo up
    ns "$P-h$i" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    ip link add "$P-u$i" type veth peer name "$P-b$i"
    ip link set "$P-u$i" netns "$P-h$i"
    ip link set "$P-b$i" netns "$P-fab"
    ns "$P-fab" ip link set "$P-b$i" mtu 1600 master br0 up
    ns "$P-h$i" ip link set "$P-u$i" address "02:00:00:00:ff:0$i" mtu 1600 up
    # the host's own address first: the kernel's own traffic (etcd) takes the primary address
    # as its source, and xvs answers ARP for the VTEP address itself
    ns "$P-h$i" ip addr add "192.168.77.1$i/24" dev "$P-u$i"
    ns "$P-h$i" ip addr add "192.168.77.$i/24" dev "$P-u$i"
    ns "$P-h$i" ethtool -K "$P-u$i" tx off tso off gso off >/dev/null 2>&1 || true
    # etcd member i, on its own namespace and address
    ip netns add "$P-e$i"
    ns "$P-e$i" ip link set lo up
    ip link add "$P-c$i" type veth peer name "$P-d$i"
    ip link set "$P-c$i" netns "$P-e$i"
    ip link set "$P-d$i" netns "$P-fab"
    ns "$P-fab" ip link set "$P-d$i" master br0 up
    ns "$P-e$i" ip addr add "192.168.77.2$i/24" dev "$P-c$i"
    ns "$P-e$i" ip link set "$P-c$i" up
  done
  # blue and red VMs with the same addresses: vm1/vm3 on h1, vm2/vm4 on h2, vm5/vm6 on h3
  vm "$P-vm1" "$P-h1" "$P-p1" 10.0.0.1 02:00:00:00:00:01
  vm "$P-vm3" "$P-h1" "$P-p3" 10.0.0.1 02:00:00:00:00:01
  vm "$P-vm2" "$P-h2" "$P-p2" 10.0.0.2 02:00:00:00:00:02
  vm "$P-vm4" "$P-h2" "$P-p4" 10.0.0.2 02:00:00:00:00:02
  vm "$P-vm5" "$P-h3" "$P-p5" 10.0.0.3 02:00:00:00:00:03
  vm "$P-vm6" "$P-h3" "$P-p6" 10.0.0.3 02:00:00:00:00:03
  for n in vm1 vm2 vm3 vm4 vm5 vm6; do ns "$P-$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1; done
}

down() {
  # OVS daemons run inside the host namespaces: the loop below ends them with the rest.
  for n in h1 h2 h3 vm1 vm2 vm3 vm4 vm5 vm6 e1 e2 e3 fab; do
    ip netns pids "$P-$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$P-$n" 2>/dev/null || true
  done
  ip link del "$P-u1" 2>/dev/null || true
  rm -rf "$OVSDIR"
}

config() { # config HOST(1|2) [cores, e.g. "1" or "0, 1"] [veth|tap]
  local h=$1 core=${2:-1} other=$(( 3 - $1 )) kind=${3:-veth}
  local a b
  if [ "$h" = 1 ]; then a=p1; b=p3; else a=p2; b=p4; fi
  if [ "$kind" = tap ]; then a=t${a#p}; b=t${b#p}; fi
  cat <<CFG
# xvsd on host $h of testbed $P
[uplink]
interface = "$P-u$h"
vtep_ip = "192.168.77.$h/24"

[daemon]
cores = [$core]
${XVS_FAST_PATH:+xdp_fast_path = $XVS_FAST_PATH}

[[tenant]]
name = "blue"
vni = 100
vteps = ["192.168.77.$other"]
${XVS_STATIC_FDB:+fdb = [{ mac = \"02:00:00:00:00:0$other\", vtep = \"192.168.77.$other\" \}]}

[[tenant]]
name = "red"
vni = 200
vteps = ["192.168.77.$other"]
${XVS_STATIC_FDB:+fdb = [{ mac = \"02:00:00:00:00:0$other\", vtep = \"192.168.77.$other\" \}]}

[[port]]
interface = "$P-$a"
tenant = "blue"
mac = "02:00:00:00:00:0$h"
ips = ["10.0.0.$h"]

[[port]]
interface = "$P-$b"
tenant = "red"
mac = "02:00:00:00:00:0$h"
ips = ["10.0.0.$h"]
CFG
}

case "$cmd" in
  up) down; up "${3:-xvs}" ;;
  down) down ;;
  config) config "${3:?HOST}" "${4:-1}" "${5:-veth}" ;;
  *) echo "usage: testbed.sh up|down|config PREFIX" >&2; exit 2 ;;
esac
