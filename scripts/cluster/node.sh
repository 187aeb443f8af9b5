#!/usr/bin/env bash
# One node's part in forming a shoal cluster from scratch: what the Vagrantfile provisions on
# each VM, and what tests/e2e/provisioning.rs runs in network namespaces (where there is no
# systemd, so the agent is started by the test and `install` is not called).
#
#   node.sh install                 scripts/install.sh (with --binary $SHOAL_BINARY if set),
#                                   then wait for the agent's socket
#   node.sh init ADDR SHARED        swarm init --advertise-addr ADDR; the join tokens and
#                                   the manager's address are written to SHARED/
#   node.sh join ADDR SHARED [ROLE] waits (up to 10 min) for SHARED/ to hold them, joins as
#                                   ROLE: worker (the default) or manager
#   node.sh check COUNT             on a manager: waits until COUNT nodes are Ready, deploys
#                                   the README's published-port example (web, 2 replicas,
#                                   8080:80) and waits for its 2 tasks to run
#   node.sh curl ADDR...            from OUTSIDE the cluster (the Vagrant host, the tests'
#                                   client namespace): every ADDR answers on port 8080
#
# Environment: SHOAL (the shoal binary; default: `shoal` on PATH), SHOAL_HOST (the agent's
# API, as the CLI reads it). SHARED is a directory every node sees (Vagrant's synced folder).
# `curl` runs outside the cluster because a node is not a client of the routing mesh: as in
# Docker's swarm, a node reaching a published port is not served reliably (issue 24 adds
# node-local access).
set -euo pipefail

SHOAL=${SHOAL:-shoal}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
say() { printf 'node.sh: %s\n' "$*"; }
die() { printf 'node.sh: error: %s\n' "$*" >&2; exit 1; }

# Runs `$@` every 0.5 s until it succeeds, for at most $1 seconds.
retry_for() {
  local seconds=$1; shift
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}

agent_up() { "$SHOAL" info >/dev/null; }
in_swarm() { "$SHOAL" info | grep -q '^Swarm: active'; }

install_node() {
  local args=()
  [ -n "${SHOAL_BINARY:-}" ] && args+=(--binary "$SHOAL_BINARY")
  "$here/scripts/install.sh" "${args[@]}"
  retry_for 60 agent_up || die "the agent did not answer within 60 s (journalctl -u shoal)"
  say "agent running"
}

init_node() {
  local addr=$1 shared=$2
  mkdir -p "$shared"
  retry_for 60 agent_up || die "no agent answers at ${SHOAL_HOST:-the default socket}"
  # A re-provisioned manager keeps its swarm; only a node outside one initialises.
  in_swarm || "$SHOAL" swarm init --advertise-addr "$addr"
  # Written whole, then renamed, so a joining node never reads half a token.
  "$SHOAL" swarm join-token -q worker >"$shared/worker-token.tmp"
  "$SHOAL" swarm join-token -q manager >"$shared/manager-token.tmp"
  echo "$addr:2377" >"$shared/manager-addr.tmp"
  for f in worker-token manager-token manager-addr; do mv "$shared/$f.tmp" "$shared/$f"; done
  say "initialised the swarm at $addr; tokens in $shared"
}

join_node() {
  local addr=$1 shared=$2 role=${3:-worker}
  case "$role" in worker|manager) ;; *) die "ROLE is worker or manager, not '$role'" ;; esac
  retry_for 60 agent_up || die "no agent answers at ${SHOAL_HOST:-the default socket}"
  retry_for 600 test -s "$shared/manager-addr" || die "no manager wrote $shared/manager-addr"
  if in_swarm; then
    say "already in a swarm"
    return
  fi
  "$SHOAL" swarm join --advertise-addr "$addr" --token "$(cat "$shared/$role-token")" \
    "$(cat "$shared/manager-addr")"
  say "joined $(cat "$shared/manager-addr") as a $role"
}

# Counts print a number even when the CLI fails (retried until it answers).
ready_count() {
  "$SHOAL" node ls 2>/dev/null | grep -w Ready | wc -l
}

running_web_tasks() {
  "$SHOAL" service ps web --format json 2>/dev/null | grep -o '"state": *"running"' | wc -l
}

# Conditions for retry_for, evaluated afresh on each try.
nodes_ready() { [ "$(ready_count)" -ge "$1" ]; }
web_running() { [ "$(running_web_tasks)" -ge 2 ]; }

check_cluster() {
  local count=$1
  retry_for 120 nodes_ready "$count" ||
    { "$SHOAL" node ls >&2 || true; die "fewer than $count nodes Ready within 120 s"; }
  "$SHOAL" node ls
  if ! "$SHOAL" service inspect web >/dev/null 2>&1; then
    "$SHOAL" service create --detach --name web --replicas 2 -p 8080:80 -- \
      "$(command -v "$SHOAL")" whoami --port 80
  fi
  retry_for 60 web_running ||
    { "$SHOAL" service ps web >&2 || true; die "web's 2 tasks were not running within 60 s"; }
  "$SHOAL" service ps web
  say "cluster of $count nodes ready, web running"
}

curl_published() {
  local addr
  for addr in "$@"; do
    retry_for 60 curl -fsS -m 2 "http://$addr:8080/" ||
      die "the published port 8080 did not answer on $addr within 60 s"
    say "http://$addr:8080/ answers"
  done
}

case "${1:-}" in
  install) install_node ;;
  init) [ $# -eq 3 ] || die "usage: node.sh init ADDR SHARED"; init_node "$2" "$3" ;;
  join) [ $# -ge 3 ] && [ $# -le 4 ] || die "usage: node.sh join ADDR SHARED [ROLE]"
    join_node "$2" "$3" "${4:-worker}" ;;
  check) [ $# -eq 2 ] || die "usage: node.sh check COUNT"; check_cluster "$2" ;;
  curl) [ $# -ge 2 ] || die "usage: node.sh curl ADDR..."; shift; curl_published "$@" ;;
  *) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
