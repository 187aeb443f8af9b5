#!/usr/bin/env bash
# shoal demo: builds shoal, starts a local 3-node cluster in network namespaces on this
# machine, and shows it working. The agents run their underlay XDP program in generic mode:
# a veth delivers native XDP_TX frames only to a peer that runs XDP too (the tests give the
# underlay's ports an XDP program instead; a real NIC needs neither). The cluster stays up for you to explore; `demo.sh down`
# removes it (namespaces, agents, state, pinned maps).
#
#   shoal-demo-ul      the underlay "switch": bridge br0
#   shoal-demo-node1   eth0 192.168.50.11/24   agent socket /run/shoal-demo/node1/shoal.sock
#   shoal-demo-node2   eth0 192.168.50.12/24   ...
#   shoal-demo-node3   eth0 192.168.50.13/24
#   shoal-demo-client  eth0 192.168.50.100/24  an outside client on the underlay
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

NODES=3
PREFIX=shoal-demo
RUN=/run/shoal-demo
SUBNET=192.168.50
SHOAL=$PWD/target/debug/shoal

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
node_ns() { echo "$PREFIX-node$1"; }
node_sock() { echo "$RUN/node$1/shoal.sock"; }
node_shoal() { local i=$1; shift; "$SHOAL" -H "unix://$(node_sock "$i")" "$@"; }

down() {
  for i in $(seq 1 $NODES); do
    if [ -f "$RUN/node$i/agent.pid" ]; then
      kill -TERM "$(cat "$RUN/node$i/agent.pid")" 2>/dev/null || true
    fi
  done
  # Give agents a moment to detach their programs, then make sure they are gone.
  for _ in $(seq 1 50); do
    pgrep -f "$RUN/node" >/dev/null || break
    sleep 0.1
  done
  pkill -KILL -f "$RUN/node" 2>/dev/null || true
  # Tasks outlive their agent on purpose (a restarted agent re-adopts them): end them now.
  for pidfile in "$RUN"/node*/state/tasks/*/pid; do
    [ -f "$pidfile" ] && kill -KILL -- "-$(cut -d' ' -f1 "$pidfile")" 2>/dev/null || true
  done
  # Task cgroups, where each node recorded them (a "<kind> <dir>" line per hierarchy): what a
  # task left outside its process group dies there, then the cgroups go.
  for record in "$RUN"/node*/state/cgroups; do
    [ -f "$record" ] || continue
    while read -r _ dir; do
      for task in "$dir"/*/; do
        [ -d "$task" ] || continue
        for _ in $(seq 1 50); do
          xargs -r kill -KILL < "$task/cgroup.procs" 2>/dev/null || true
          rmdir "$task" 2>/dev/null && break
          sleep 0.1
        done
      done
      rmdir "$dir" 2>/dev/null || true
      rmdir "$(dirname "$dir")" 2>/dev/null || true
    done < "$record"
  done
  for i in $(seq 1 $NODES); do
    id=$(cat "$RUN/node$i/state/node-id" 2>/dev/null || true)
    [ -n "$id" ] && rm -rf "/sys/fs/bpf/shoal/$id"
  done
  # The pin root too, once no agent on this host keeps pins there.
  rmdir /sys/fs/bpf/shoal 2>/dev/null || true
  for ns in $(ip netns list | awk '{print $1}' | grep "^$PREFIX-" || true); do
    ip netns del "$ns"
  done
  # Overlay sandboxes and task namespaces are bind mounts under each state dir.
  awk -v run="$RUN/" 'index($5, run) == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
  rm -rf "$RUN"
  # The example stack's targets (see examples/web-stack.yml).
  rm -rf /srv/web-stack
}

plug() { # plug NS PORT ADDRESS: a veth from the underlay bridge to eth0 in NS
  ip -n "$PREFIX-ul" link add "$2" type veth peer name eth0 netns "$1"
  ip -n "$PREFIX-ul" link set "$2" master br0 up
  ip -n "$1" addr add "$3/24" dev eth0
  ip -n "$1" link set eth0 up
  ip -n "$1" link set lo up
}

if [ "${1:-up}" = down ]; then
  down
  echo "demo: removed"
  exit 0
fi

say "Setting up this machine (packages, eBPF toolchain, bpffs)"
./scripts/setup.sh
say "Building shoal"
SHOAL_REQUIRE_EBPF=1 cargo build --locked --bin shoal

say "Removing any earlier demo"
down

say "Creating the underlay and $NODES node namespaces"
ip netns add "$PREFIX-ul"
ip -n "$PREFIX-ul" link add br0 type bridge
ip -n "$PREFIX-ul" link set br0 up
ip netns add "$PREFIX-client"
plug "$PREFIX-client" client "$SUBNET.100"
# The client stands for a host on a real wire: full checksums, not a local socket's partial
# ones left for offload (which an XDP program that rewrites the frame cannot finish).
ip netns exec "$PREFIX-client" ethtool -K eth0 tx off >/dev/null
for i in $(seq 1 $NODES); do
  ip netns add "$(node_ns "$i")"
  plug "$(node_ns "$i")" "n$i" "$SUBNET.$((10 + i))"
done

say "Starting an agent in each node"
for i in $(seq 1 $NODES); do
  mkdir -p "$RUN/node$i"
  # nsenter enters the network namespace only, so bpffs stays visible to the agent.
  nsenter --net="/run/netns/$(node_ns "$i")" -- setsid "$SHOAL" agent \
    --state-dir "$RUN/node$i/state" --socket "$(node_sock "$i")" \
    --hostname "node$i" --advertise-addr "$SUBNET.$((10 + i))" \
    --xdp-mode generic \
    >"$RUN/node$i/agent.log" 2>&1 </dev/null &
  echo $! >"$RUN/node$i/agent.pid"
done
for i in $(seq 1 $NODES); do
  for _ in $(seq 1 100); do
    node_shoal "$i" info >/dev/null 2>&1 && break
    sleep 0.1
  done
  node_shoal "$i" info >/dev/null || { cat "$RUN/node$i/agent.log"; exit 1; }
done

say "Sending a little traffic from the outside client to each node's underlay address"
for i in $(seq 1 $NODES); do
  ip netns exec "$PREFIX-client" bash -c "for n in 1 2 3 4 5; do echo hi >/dev/udp/$SUBNET.$((10 + i))/9; done" || true
done

say "node1: shoal swarm init"
node_shoal 1 swarm init
manager_token=$(node_shoal 1 swarm join-token -q manager)
say "node2 and node3 join as managers (three managers survive the loss of one)"
node_shoal 2 swarm join --token "$manager_token" "$SUBNET.11:2377"
node_shoal 3 swarm join --token "$manager_token" "$SUBNET.11:2377"

# Heartbeats mark every node Ready within a second or two.
for _ in $(seq 1 50); do
  [ "$(node_shoal 1 node ls | grep -c Ready)" -eq $NODES ] && break
  sleep 0.2
done
say "shoal node ls   (on node1, the leader)"
node_shoal 1 node ls
say "shoal node ls   (on node3, a follower: the call is forwarded to the leader)"
node_shoal 3 node ls

say "shoal info   (on node2)"
node_shoal 2 info

say "shoal network create -d overlay appnet"
node_shoal 1 network create -d overlay appnet
say "shoal service create --name web --replicas 3 --network appnet -- shoal whoami --port 80"
node_shoal 1 service create --name web --replicas 3 --network appnet -- "$SHOAL" whoami --port 80
say "shoal service ls"
node_shoal 1 service ls
say "shoal service ps web"
node_shoal 1 service ps web
say "shoal exec web.2 -- hostname   (a task's hostname is its ID; it may run on another node)"
node_shoal 1 exec web.2 -- hostname
say "shoal service logs web"
node_shoal 1 service logs web

addrs=$(node_shoal 1 service ps --format json web | grep -o '"addr": "[0-9.]*' | cut -d'"' -f4)
say "Task addresses on appnet: $(echo $addrs)"
say "shoal network inspect appnet   (on node1: its own endpoints, and its gossip peers)"
node_shoal 1 network inspect appnet
for ip in $addrs; do
  say "shoal exec web.1 -- curl http://$ip/   (over VXLAN when the task is on another node)"
  node_shoal 1 exec web.1 -- curl -s --max-time 5 "http://$ip/" | grep -E 'Hostname|RemoteAddr'
done

say "shoal service create --name rr --endpoint-mode dnsrr --replicas 2 --network appnet -- shoal whoami"
node_shoal 1 service create --name rr --endpoint-mode dnsrr --replicas 2 --network appnet -- "$SHOAL" whoami --port 80
say "shoal exec web.1 -- cat /etc/resolv.conf   (every task asks the embedded DNS at 127.0.0.11)"
node_shoal 1 exec web.1 -- cat /etc/resolv.conf
say "shoal exec web.1 -- getent hosts web   (a vip service: its virtual IP)"
node_shoal 1 exec web.1 -- getent hosts web
say "shoal exec web.1 -- getent ahosts tasks.web   (every task of the service)"
node_shoal 1 exec web.1 -- getent ahosts tasks.web | awk '{print $1}' | sort -u
say "shoal exec web.1 -- dig +short rr   (a dnsrr service: its task IPs, shuffled per query)"
node_shoal 1 exec web.1 -- dig @127.0.0.11 +short rr
node_shoal 1 exec web.1 -- dig @127.0.0.11 +short rr
say "shoal exec web.1 -- curl http://web.2/   (task names resolve too)"
node_shoal 1 exec web.1 -- curl -s --max-time 5 "http://web.2/" | grep -E 'Hostname'

say "shoal exec web.1 -- curl http://web/ x6   (the VIP: round robin over every task, in eBPF)"
for _ in 1 2 3 4 5 6; do
  node_shoal 1 exec web.1 -- curl -s --max-time 5 "http://web/" | grep -E 'Hostname'
done
say "curl node1's /metrics | grep shoal_lb_   (flows per VIP and per backend)"
nsenter --net="/run/netns/$(node_ns 1)" -- curl -s http://127.0.0.1:9323/metrics | grep -E '^shoal_lb_(vip|backend)_flows'

say "shoal service create --name my-web --replicas 2 -p 8080:80 -- shoal whoami --port 80   (the routing mesh)"
node_shoal 1 service create --name my-web --replicas 2 -p 8080:80 -- "$SHOAL" whoami --port 80
node_shoal 1 service ls
node_shoal 1 service ps my-web
for i in $(seq 1 $NODES); do
  say "From the outside client ($SUBNET.100): curl http://$SUBNET.$((10 + i)):8080/ x4   (every node serves the port, round robin over both tasks, which see the client's own address)"
  for _ in 1 2 3 4; do
    ip netns exec "$PREFIX-client" curl -s --max-time 5 "http://$SUBNET.$((10 + i)):8080/" | grep -E 'Hostname|RemoteAddr' | paste -sd' '
  done
done
say "curl node1's /metrics | grep shoal_mesh_   (connections the underlay XDP program forwarded)"
nsenter --net="/run/netns/$(node_ns 1)" -- curl -s http://127.0.0.1:9323/metrics | grep -E '^shoal_mesh_events_total\{event="(forwarded|replied|returned)"'

say "shoal service rm my-web   (frees 8080 for the stack)"
node_shoal 1 service rm my-web
# Tasks see the node's files: the stack's volume and config targets must exist on the nodes.
mkdir -p /srv/web-stack/db && touch /srv/web-stack/front.conf
say "SHOAL=$SHOAL shoal stack deploy -c examples/web-stack.yml web   (a compose file: 3 services, 2 networks, a secret, a config, a volume)"
SHOAL="$SHOAL" node_shoal 1 stack deploy -c examples/web-stack.yml web
say "shoal stack ls; shoal stack services web"
node_shoal 1 stack ls
node_shoal 1 stack services web
# Desired and current state both Running, for all 6 tasks (at most 30 s).
for _ in $(seq 1 60); do
  [ "$(node_shoal 1 stack ps web | grep -cE 'Running +Running')" -ge 6 ] && break
  sleep 0.5
done
node_shoal 1 stack ps web
say "From the outside client: curl http://$SUBNET.11:8080/   (the stack's front, through the mesh)"
ip netns exec "$PREFIX-client" curl -s --max-time 5 "http://$SUBNET.11:8080/" | grep -E 'Hostname' | paste -sd' '
say "shoal exec web_front.1 -- curl http://api/ x3   (services of a stack reach each other by their short names)"
for _ in 1 2 3; do
  node_shoal 1 exec web_front.1 -- curl -s --max-time 5 "http://api/" | grep -E 'Hostname'
done
say "shoal exec web_db.1 -- ls -l /run/secrets   (the secret, on a tmpfs private to the task)"
node_shoal 1 exec web_db.1 -- ls -l /run/secrets

cat <<EOT

The cluster is running. Try:
  $SHOAL -H unix://$(node_sock 1) node ls
  $SHOAL -H unix://$(node_sock 1) node inspect --pretty node2
  $SHOAL -H unix://$(node_sock 1) node update --label-add zone=a node3
  $SHOAL -H unix://$(node_sock 1) service scale web=6
  $SHOAL -H unix://$(node_sock 1) service update --publish-add 9090:80 web_front
  ip netns exec $PREFIX-client curl http://$SUBNET.13:9090/
  $SHOAL -H unix://$(node_sock 1) stack rm web
  $SHOAL -H unix://$(node_sock 1) exec web.1 -- dig @127.0.0.11 tasks.web
  $SHOAL -H unix://$(node_sock 1) service update --update-delay 1s --args "whoami --port 81" web
  $SHOAL -H unix://$(node_sock 2) info --format json
  kill -9 \$(cat $RUN/node1/agent.pid)   # then: node ls on node2 shows a new leader
  ip -n $(node_ns 1) link show eth0        # the XDP program on the underlay interface
  nsenter --net=$RUN/node1/state/netns/net-<network id> bridge fdb show dev vxlan0
  tail $RUN/node1/agent.log
Tear it down with:
  ./scripts/demo.sh down
EOT
