#!/usr/bin/env bash
# start-nodes.sh N -- imitate N cluster nodes on this machine, for multi-node tests.
#
# Node K (K = 1..N) is named nodeK and is a network namespace (/run/netns/nodeK) plus a UTS
# namespace with its own host name, with one interface (eth0, 10.251.0.(10+K)/24) on a
# private bridge (mdnodes0, 10.251.0.1/24) that only these namespaces and the root
# namespace share. No route leads anywhere else: the nodes reach each other and the root
# namespace's bridge address, nothing more. /etc/hosts gets a marked block naming them.
# Each node gives up on an unanswered TCP connection after 5 retransmissions (about 13 s;
# net.ipv4.tcp_retries2, 15 and about 15 minutes by default), as clusters that want a lost
# node noticed set it: this is what ends Open MPI's mpirun when a node is cut off.
# Hostfiles (3 slots per node) go to $MPIDASK_NODES_DIR: hostfile for Open MPI's mpirun,
# hostfile.hydra for MPICH's mpiexec.
#
# Run a command on a node:  scripts/on-node nodeK CMD...
# Stop:                     scripts/stop-nodes.sh
#
# Idempotent: running it again keeps nodes that are up (a different N adds or removes
# nodes). Root only. Environment: MPIDASK_NODES_DIR (state) [/run/mpidask-nodes],
# MPIDASK_NODE_SLOTS (hostfile slots per node) [3].
set -euo pipefail

N=${1:-${NODES:-3}}
DIR=${MPIDASK_NODES_DIR:-/run/mpidask-nodes}
SLOTS=${MPIDASK_NODE_SLOTS:-3}
BRIDGE=mdnodes0
SUBNET=10.251.0
MARK="# mpidask-nodes"

log() { printf '[nodes] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "$N" in ''|*[!0-9]*) die "the number of nodes must be a whole number from 1 to 200, not '$N'" ;; esac
[ "$N" -ge 1 ] && [ "$N" -le 200 ] || die "the number of nodes must be from 1 to 200, not $N"
[ "$(id -u)" = 0 ] || die "must run as root (namespaces, a bridge and /etc/hosts need it)"
for tool in ip unshare nsenter; do
  command -v "$tool" >/dev/null || die "'$tool' is missing: apt-get install iproute2 util-linux"
done

# What the kernel allows, tried once with a throw-away namespace.
if ! unshare --net --uts true 2>/dev/null; then
  die "the kernel refuses new network/UTS namespaces (unshare --net --uts failed): run as root \
on a kernel with CONFIG_NET_NS and CONFIG_UTS_NS, outside a container that forbids them \
(docker needs --privileged or --cap-add SYS_ADMIN)"
fi
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
  ip link add "$BRIDGE" type bridge 2>/dev/null \
    || die "cannot make a bridge (ip link add $BRIDGE type bridge failed): the kernel needs the bridge module"
  log "bridge $BRIDGE $SUBNET.1/24"
fi
# (grep reads a variable: grep -q on a pipe may end it early, which pipefail counts as failure)
grep -q "inet $SUBNET.1/24" <<< "$(ip addr show dev "$BRIDGE")" || ip addr add "$SUBNET.1/24" dev "$BRIDGE"
ip link set "$BRIDGE" up

mkdir -p "$DIR"
# A private mount point for the UTS namespace files (a bind mount keeps each alive).
if ! mountpoint -q "$DIR"; then
  mount -t tmpfs -o size=1m,mode=755 mpidask-nodes "$DIR"
fi
mount --make-private "$DIR"

node_up() {
  local name=$1 address=$2 veth=$3
  if [ ! -e "/run/netns/$name" ]; then
    ip netns add "$name"
  fi
  if ! ip link show "$veth" >/dev/null 2>&1; then
    ip -n "$name" link del eth0 2>/dev/null || true
    ip link add "$veth" type veth peer name "${veth}p" \
      || die "cannot make a veth pair for $name (the kernel needs the veth module)"
    ip link set "${veth}p" netns "$name"
    ip -n "$name" link set "${veth}p" name eth0
  fi
  ip link set "$veth" master "$BRIDGE"
  ip link set "$veth" up
  ip -n "$name" link set lo up
  grep -q "inet $address/24" <<< "$(ip -n "$name" addr show dev eth0)" || ip -n "$name" addr add "$address/24" dev eth0
  ip -n "$name" link set eth0 up
  ip netns exec "$name" sysctl -qw net.ipv4.tcp_retries2=5 \
    || die "cannot set net.ipv4.tcp_retries2 in $name (the kernel keeps it per network namespace since Linux 4.15)"
  if [ ! -e "$DIR/$name.uts" ] || ! mountpoint -q "$DIR/$name.uts"; then
    touch "$DIR/$name.uts"
    unshare --uts="$DIR/$name.uts" hostname "$name"
  fi
  [ "$(nsenter --uts="$DIR/$name.uts" hostname)" = "$name" ] || die "$name has the wrong host name"
}

node_down() {
  local name=$1 veth=$2
  ip netns pids "$name" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip link del "$veth" 2>/dev/null || true
  ip netns del "$name" 2>/dev/null || true
  if mountpoint -q "$DIR/$name.uts"; then umount "$DIR/$name.uts"; fi
  rm -f "$DIR/$name.uts"
}

hosts=""
: > "$DIR/hostfile.new"
: > "$DIR/hostfile.hydra.new"
for k in $(seq 1 "$N"); do
  node_up "node$k" "$SUBNET.$((10 + k))" "mdn$k"
  hosts+="$SUBNET.$((10 + k)) node$k $MARK"$'\n'
  printf 'node%s slots=%s\n' "$k" "$SLOTS" >> "$DIR/hostfile.new"
  printf 'node%s:%s\n' "$k" "$SLOTS" >> "$DIR/hostfile.hydra.new"
done
# Nodes of an earlier, larger start.
for name in $(ip netns list | awk '{print $1}' | grep -E '^node[0-9]+$' || true); do
  k=${name#node}
  if [ "$k" -gt "$N" ] && [ -e "$DIR/$name.uts" ]; then
    log "removing $name (now $N nodes)"
    node_down "$name" "mdn$k"
  fi
done
mv "$DIR/hostfile.new" "$DIR/hostfile"
mv "$DIR/hostfile.hydra.new" "$DIR/hostfile.hydra"
echo "$N" > "$DIR/count"

# /etc/hosts: the marked lines replaced (written in place: it may be a bind mount).
hosts+="$SUBNET.1 $(hostname -s)-bridge $MARK"$'\n'
{ grep -v -- "$MARK\$" /etc/hosts || true; printf '%s' "$hosts"; } > "$DIR/hosts.new"
cat "$DIR/hosts.new" > /etc/hosts
rm -f "$DIR/hosts.new"

log "$N node(s) up: $(seq -s ' ' -f 'node%g' 1 "$N"); hostfile $DIR/hostfile; run on one with scripts/on-node NAME CMD..."
