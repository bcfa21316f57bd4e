#!/usr/bin/env bash
# stop-nodes.sh -- remove the nodes start-nodes.sh made: kills every process in them, removes
# their namespaces, veth pairs, the bridge and the marked /etc/hosts lines. Idempotent.
set -euo pipefail

DIR=${MPIDASK_NODES_DIR:-/run/mpidask-nodes}
BRIDGE=mdnodes0
MARK="# mpidask-nodes"

[ "$(id -u)" = 0 ] || { echo "[nodes] ERROR: must run as root" >&2; exit 1; }

for name in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^node[0-9]+$' || true); do
  [ -e "$DIR/$name.uts" ] || continue   # not one of ours
  ip netns pids "$name" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip link del "mdn${name#node}" 2>/dev/null || true
  ip netns del "$name" 2>/dev/null || true
  if mountpoint -q "$DIR/$name.uts"; then umount "$DIR/$name.uts"; fi
  rm -f "$DIR/$name.uts"
done
ip link del "$BRIDGE" 2>/dev/null || true
if grep -q -- "$MARK\$" /etc/hosts; then
  grep -v -- "$MARK\$" /etc/hosts > /tmp/mpidask-hosts.$$ || true
  cat /tmp/mpidask-hosts.$$ > /etc/hosts
  rm -f /tmp/mpidask-hosts.$$
fi
if mountpoint -q "$DIR"; then umount "$DIR"; fi
rmdir "$DIR" 2>/dev/null || true
echo "[nodes] stopped" >&2
