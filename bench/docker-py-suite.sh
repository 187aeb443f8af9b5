#!/usr/bin/env bash
# docker-py's own integration tests, run as a peer suite against one shoal node's docker.sock.
#
#   bench/docker-py-suite.sh DOCKER_PY_CHECKOUT [PYTEST ARGS...]
#
# DOCKER_PY_CHECKOUT: a clone of github.com/docker/docker-py (bench/README.md names the commit
# measured). Its code stays out of this repository. The suite runs the swarm areas the Engine
# API issue names: api_swarm, api_service, api_network, api_secret, api_config and the
# models_* files for the same areas, against a fresh agent (not in a swarm: the tests init and
# leave it themselves) in a network namespace of its own.
#
# pytest runs with --noconftest: docker-py's conftest pulls alpine:3.10 before the first test,
# and shoal has no images (a service's "image" is a program). Tests that create services from
# an image fail with shoal's "names no program" answer; bench/README.md counts them apart.
#
# Prints pytest's summary and a tally by file; the junit XML is kept in $OUT (default
# /tmp/shoal-docker-py) for the README's table. Everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

checkout=${1:?usage: bench/docker-py-suite.sh DOCKER_PY_CHECKOUT [PYTEST ARGS...]}
shift
checkout=$(cd "$checkout" && pwd)
[ -d "$checkout/tests/integration" ] || {
  echo "docker-py-suite: $checkout has no tests/integration (a docker-py checkout?)" >&2
  exit 1
}
SHOAL=${SHOAL_BIN:-$PWD/target/debug/shoal}
[ -x "$SHOAL" ] || { echo "docker-py-suite: no shoal binary at $SHOAL (cargo build --bin shoal)" >&2; exit 1; }
OUT=${OUT:-/tmp/shoal-docker-py}
NS=shoal-dpy
RUN=$OUT/node
FILES=(
  api_swarm_test.py api_service_test.py api_network_test.py api_secret_test.py
  api_config_test.py models_swarm_test.py models_nodes_test.py models_services_test.py
  models_networks_test.py
)

# docker-py's tests import paramiko (its ssh helpers) and run under pytest.
python3 -c 'import pytest, paramiko' 2>/dev/null || python3 -m pip install --quiet pytest paramiko
python3 -c 'import docker' 2>/dev/null || { echo "docker-py-suite: run scripts/setup.sh first" >&2; exit 1; }

down() {
  if [ -f "$RUN/agent.pid" ]; then
    kill -TERM "$(cat "$RUN/agent.pid")" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$(cat "$RUN/agent.pid")" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$(cat "$RUN/agent.pid")" 2>/dev/null || true
  fi
  # What the agent left (tasks, sandboxes, pins, mounts), then the namespace.
  if [ -d "$RUN/state" ]; then
    nsenter --net="/run/netns/$NS" -- "$SHOAL" agent --purge --state-dir "$RUN/state" \
      --socket "$RUN/shoal.sock" >/dev/null 2>&1 || true
  fi
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$RUN"
}
trap down EXIT
down
mkdir -p "$RUN"

# One node: loopback (the tests advertise 127.0.0.1) and an underlay address on a veth (the
# kernel has no dummy links).
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add eth0 type veth peer name eth1
ip -n "$NS" addr add 10.231.0.1/24 dev eth0
ip -n "$NS" link set eth0 up
ip -n "$NS" link set eth1 up
nsenter --net="/run/netns/$NS" -- setsid "$SHOAL" agent --state-dir "$RUN/state" \
  --socket "$RUN/shoal.sock" --hostname dpy-node --advertise-addr 10.231.0.1 \
  --xdp-mode generic >"$OUT/agent.log" 2>&1 </dev/null &
echo $! >"$RUN/agent.pid"
for _ in $(seq 1 100); do
  [ -S "$RUN/docker.sock" ] && break
  sleep 0.1
done
[ -S "$RUN/docker.sock" ] || { cat "$OUT/agent.log"; exit 1; }

paths=()
for f in "${FILES[@]}"; do paths+=("$checkout/tests/integration/$f"); done
status=0
(
  cd "$checkout"
  nsenter --net="/run/netns/$NS" -- env DOCKER_HOST="unix://$RUN/docker.sock" \
    DOCKER_TEST_API_VERSION=1.47 python3 -m pytest --noconftest -p no:cacheprovider -q \
    -o junit_family=xunit1 --junitxml="$OUT/junit.xml" -rfE "${paths[@]}" "$@"
) || status=$?

python3 - "$OUT/junit.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict

tally = defaultdict(lambda: defaultdict(int))
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    name = case.get("file") or case.get("classname", "?").split(".")[-2]
    outcome = "passed"
    for child in case:
        if child.tag in ("failure", "error", "skipped"):
            outcome = child.tag
    tally[name][outcome] += 1
print(f"\n{'file':<40} {'passed':>7} {'failed':>7} {'error':>7} {'skipped':>8}")
totals = defaultdict(int)
for name in sorted(tally):
    t = tally[name]
    for k, v in t.items():
        totals[k] += v
    print(f"{name:<40} {t['passed']:>7} {t['failure']:>7} {t['error']:>7} {t['skipped']:>8}")
print(f"{'total':<40} {totals['passed']:>7} {totals['failure']:>7} {totals['error']:>7} {totals['skipped']:>8}")
EOF
echo "docker-py-suite: junit XML in $OUT/junit.xml, agent log in $OUT/agent.log"
exit "$status"
