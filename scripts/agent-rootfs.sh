#!/usr/bin/env bash
# Assembles the shoal agent's container root filesystem without Docker, as an OCI bundle that
# runc runs: the same files deploy/Dockerfile puts in the image (which runs this script), and a
# config.json made from deploy/docker-stack.yml's settings.
#
#   scripts/agent-rootfs.sh OUT_DIR [--binary PATH] [--stack FILE] [--no-config]
#
#   OUT_DIR/rootfs/      /usr/local/bin/shoal (--binary PATH; default target/release/shoal,
#                        else target/debug/shoal), /usr/bin/tini (PID 1: reaps orphaned task
#                        processes, forwards SIGTERM), /usr/sbin/nft (the gateway bridge's
#                        masquerade: `nft -f -`), /bin/sh (tasks' CMD-SHELL health checks), the
#                        shared libraries of each (ldd), /etc basics, empty mount points
#   OUT_DIR/config.json  (unless --no-config) runc's config: entrypoint and command, env,
#                        capabilities (exactly the stack's cap_add, after cap_drop ALL),
#                        ulimits, the stack's bind mounts (same source and target, propagation
#                        kept), Docker's defaults for the rest (read-only /sys and /proc/sys,
#                        masked /proc files); host network, as the stack's `host` network.
#                        Needs python3 with PyYAML (scripts/setup.sh installs both).
#
# Idempotent: OUT_DIR/rootfs and OUT_DIR/config.json are rebuilt whole (in a temporary
# directory, then renamed into place); nothing else in OUT_DIR is touched.
# Run it with:  runc run --bundle OUT_DIR shoal   (root; the stack's bind sources must exist).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { printf 'agent-rootfs: error: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

out=
binary=
stack=$here/deploy/docker-stack.yml
config=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary=$2; shift 2 ;;
    --binary=*) binary=${1#*=}; shift ;;
    --stack) [ $# -ge 2 ] || die "--stack needs a file"; stack=$2; shift 2 ;;
    --stack=*) stack=${1#*=}; shift ;;
    --no-config) config=no; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *) [ -z "$out" ] || die "one OUT_DIR only, got '$out' and '$1'"; out=$1; shift ;;
  esac
done
[ -n "$out" ] || die "usage: agent-rootfs.sh OUT_DIR [--binary PATH] [--stack FILE] [--no-config]"

if [ -z "$binary" ]; then
  for candidate in "$here/target/release/shoal" "$here/target/debug/shoal"; do
    if [ -x "$candidate" ]; then binary=$candidate; break; fi
  done
  [ -n "$binary" ] || die "no shoal binary in target/release or target/debug: build it (cargo build --release) or pass --binary PATH"
fi
[ -f "$binary" ] && [ -x "$binary" ] || die "--binary '$binary' is not an executable file"
if [ "$config" = yes ]; then
  [ -f "$stack" ] || die "stack file '$stack' not found"
  python3 -c 'import yaml' 2>/dev/null \
    || die "python3 with PyYAML is needed for config.json (scripts/setup.sh installs it), or pass --no-config"
fi

# The tools the agent runs, each found on this machine (the Dockerfile's build stage installs
# the same Debian packages: nftables, tini; dash is /bin/sh in every Debian).
tool() {
  local name=$1 package=$2 path
  path=$(command -v "$name" 2>/dev/null) || die "'$name' is not installed here (Debian package $package)"
  printf '%s\n' "$path"
}
tini=$(tool tini tini)
nft=$(tool nft nftables)
[ -x /bin/sh ] || die "/bin/sh is missing"

mkdir -p "$out" || die "cannot create OUT_DIR '$out'"
out=$(cd "$out" && pwd)
[ "$out" != / ] || die "OUT_DIR must not be /"
tmp=$(mktemp -d "$out/.rootfs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root=$tmp/rootfs

# copy SRC DEST: DEST inside the rootfs, with SRC's content (symlinks followed) and mode.
copy() {
  local src=$1 dest=$root$2
  mkdir -p "$(dirname "$dest")"
  cp -L --preserve=mode "$src" "$dest"
}

# copy_with_libs SRC DEST: the program and every shared library ldd names for it, each at the
# path the dynamic loader will look for it.
copy_with_libs() {
  local src=$1 dest=$2 lib
  [ -f "$root$dest" ] || copy "$src" "$dest"
  # A static program has no libraries (ldd exits non-zero saying so).
  ldd "$src" 2>/dev/null | grep -oE '/[^ ]+' | while read -r lib; do
    [ -f "$root$lib" ] || copy "$lib" "$lib"
  done
}

# The agent itself: a hard link where OUT_DIR shares the binary's file system (a debug build
# is hundreds of MB), else a copy.
mkdir -p "$root/usr/local/bin"
ln -f "$(readlink -f "$binary")" "$root/usr/local/bin/shoal" 2>/dev/null || true
copy_with_libs "$binary" /usr/local/bin/shoal
copy_with_libs "$tini" /usr/bin/tini
copy_with_libs "$nft" /usr/sbin/nft
copy_with_libs /bin/sh /bin/sh

# Mount points (the runtime mounts /proc, /sys, /dev; the stack binds the rest) and /tmp.
for dir in proc sys dev tmp run/shoal run/netns var/lib/shoal etc/shoal root; do
  mkdir -p "$root/$dir"
done
chmod 1777 "$root/tmp"
chmod 0700 "$root/root" "$root/var/lib/shoal"
# /etc basics: users for `--user` (tasks resolve names from here), name lookup from files,
# and files the runtime bind-mounts over (resolv.conf, hosts, hostname).
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
: >"$root/etc/resolv.conf"
: >"$root/etc/hostname"

if [ "$config" = yes ]; then
  python3 - "$stack" "$tmp/config.json" <<'PY' || exit 1
import json, sys, yaml

stack_path, out_path = sys.argv[1], sys.argv[2]

def fail(msg):
    print(f"agent-rootfs: error: {stack_path}: {msg}", file=sys.stderr)
    sys.exit(1)

try:
    with open(stack_path) as f:
        stack = yaml.safe_load(f)
except (OSError, yaml.YAMLError) as e:
    fail(f"cannot read it: {' '.join(str(e).split())}")
agent = ((stack or {}).get("services") or {}).get("agent")
if not isinstance(agent, dict):
    fail("no service 'agent'")
if agent.get("cap_drop") != ["ALL"]:
    fail("the agent must drop every capability first (cap_drop: [ALL])")
caps = ["CAP_" + c.upper().removeprefix("CAP_") for c in agent.get("cap_add") or []]

# The image's entrypoint (deploy/Dockerfile), then the stack's command.
command = agent.get("command") or ["agent"]
if isinstance(command, str):
    command = command.split()
args = ["/usr/bin/tini", "--", "/usr/local/bin/shoal"] + [str(a) for a in command]

env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
environment = agent.get("environment") or {}
if isinstance(environment, list):
    environment = dict(e.split("=", 1) for e in environment)
for key, value in environment.items():
    # Swarm templates ({{.Node.Hostname}}) are the runtime's to fill; without one, the
    # agent's own default (the host's name) stands in.
    if value is not None and "{{" not in str(value):
        env.append(f"{key}={value}")

rlimits = []
for name, limit in (agent.get("ulimits") or {}).items():
    soft, hard = (limit, limit) if isinstance(limit, int) else (limit["soft"], limit["hard"])
    rlimits.append({"type": "RLIMIT_" + name.upper(), "soft": soft, "hard": hard})

# What dockerd gives every container that is not privileged.
mounts = [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    # Host networking: the host's resolver configuration, as dockerd copies it.
    {"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf", "options": ["rbind", "ro", "rprivate"]},
]
targets = set()
for volume in agent.get("volumes") or []:
    if not isinstance(volume, dict) or volume.get("type") != "bind":
        fail(f"volumes: only long-syntax binds are supported, got {volume!r}")
    target = volume["target"]
    if target in targets:
        fail(f"volumes: {target} is mounted twice")
    targets.add(target)
    propagation = (volume.get("bind") or {}).get("propagation", "rprivate")
    mode = "ro" if volume.get("read_only") else "rw"
    mounts.append({"destination": target, "type": "bind", "source": volume["source"],
                   "options": ["rbind", mode, propagation]})

namespaces = [{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}]
networks = agent.get("networks") or []
names = list(networks) if isinstance(networks, dict) else networks
declared = (stack.get("networks") or {})
if not any((declared.get(n) or {}).get("name") == "host" for n in names):
    fail("the agent must be on the external network 'host' (host networking)")

config = {
    "ociVersion": "1.0.2",
    "process": {
        "terminal": False,
        "user": {"uid": 0, "gid": 0},
        "args": args,
        "env": env,
        "cwd": "/",
        "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
        "rlimits": rlimits,
        "noNewPrivileges": False,
    },
    "root": {"path": "rootfs", "readonly": False},
    "mounts": mounts,
    "linux": {
        # No network or UTS namespace: the host's (the stack's `host` network).
        "namespaces": namespaces,
        "maskedPaths": [
            "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
            "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
        ],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
}
with open(out_path, "w") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
PY
fi

# Swap the new bundle in.
rm -rf "$out/rootfs"
mv "$root" "$out/rootfs"
if [ "$config" = yes ]; then
  mv "$tmp/config.json" "$out/config.json"
fi
printf 'agent-rootfs: %s/rootfs ready (%s)%s\n' "$out" "$(du -sh "$out/rootfs" | cut -f1)" \
  "$([ "$config" = yes ] && printf ', config.json from %s' "$stack")"
