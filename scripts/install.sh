#!/usr/bin/env bash
# Installs shoal on this host as a systemd service (as root), or removes it.
#
#   scripts/install.sh [--binary PATH] [--prefix DIR]    build (or take PATH) and install
#   scripts/install.sh --uninstall                       stop and remove the binary and unit
#   scripts/install.sh --purge                           also remove /etc/shoal, the state and
#                                                        the node's data path (tasks, network
#                                                        namespaces, mounts, pinned eBPF maps)
#
# Without --binary it runs scripts/setup.sh (packages, the pinned nightly and bpf-linker for
# the eBPF object) and builds `cargo build --release` with SHOAL_REQUIRE_EBPF=1, as the README
# says. Installs:
#   $PREFIX/bin/shoal                       (PREFIX: --prefix, $PREFIX, default /usr/local)
#   /etc/systemd/system/shoal.service       (ExecStart points at $PREFIX/bin/shoal)
#   /etc/shoal/agent.toml, /etc/shoal/agent.env   (only if missing: never overwritten)
#   /var/lib/shoal                          (the state dir, 0700)
# then enables and starts shoal.service, or restarts it when the binary or the unit changed.
# Idempotent: a second run changes nothing. With DESTDIR=DIR everything goes under DIR (a
# staging root: nothing is enabled or started, and --purge cleans the node whose state dir is
# DIR/var/lib/shoal); without systemd running, the unit is installed but not started.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

invocation="$0${*:+ $*}"
action=install
binary=
prefix=${PREFIX:-/usr/local}
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary=$2; shift 2 ;;
    --binary=*) binary=${1#*=}; shift ;;
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --uninstall) action=uninstall; shift ;;
    --purge) action=purge; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
case "$prefix" in /*) ;; *) die "--prefix must be an absolute path, not '$prefix'" ;; esac

destdir=${DESTDIR:-}
destdir=${destdir%/}
if [ -n "$destdir" ]; then
  case "$destdir" in /*) ;; *) die "DESTDIR must be an absolute path, not '$destdir'" ;; esac
fi
bindir=$prefix/bin
unitdir=/etc/systemd/system
confdir=/etc/shoal
statedir=/var/lib/shoal
rundir=/run/shoal
unit=shoal.service

if [ "$(id -u)" -ne 0 ] && [ -z "$destdir" ]; then
  die "run as root (it installs to $bindir and /etc, and manages a systemd unit): sudo $invocation"
fi

# systemd manages the unit only on a live system whose PID 1 is systemd; else, why not.
systemd=yes
if [ -n "$destdir" ]; then
  systemd="DESTDIR is set (a staging root)"
elif [ ! -d /run/systemd/system ]; then
  systemd="systemd is not running here (no /run/systemd/system)"
fi

# install_file SRC DEST MODE: copies when the content differs; says whether it did.
changed=no
install_file() {
  local src=$1 dest=$2 mode=$3
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    chmod "$mode" "$dest"
    say "$dest is up to date"
    return
  fi
  mkdir -p "$(dirname "$dest")"
  # A new file renamed into place: a running binary is never written over.
  local tmp
  tmp=$(mktemp "$(dirname "$dest")/.shoal-install.XXXXXX")
  cp "$src" "$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$dest"
  changed=yes
  say "installed $dest"
}

do_install() {
  if [ -z "$binary" ]; then
    say "building shoal (scripts/setup.sh, then cargo build --release)"
    "$here/scripts/setup.sh"
    (cd "$here" && PATH="$HOME/.cargo/bin:$PATH" SHOAL_REQUIRE_EBPF=1 \
      cargo build --release --locked --bin shoal)
    binary=$here/target/release/shoal
  fi
  [ -f "$binary" ] && [ -x "$binary" ] || die "--binary $binary is not an executable file"
  "$binary" --version >/dev/null 2>&1 || die "$binary does not run (--version failed)"

  install_file "$binary" "$destdir$bindir/shoal" 0755

  local unit_text
  unit_text=$(mktemp)
  sed -e "s#^ExecStart=/usr/local/bin/shoal #ExecStart=$bindir/shoal #" \
    "$here/deploy/shoal.service" >"$unit_text"
  install_file "$unit_text" "$destdir$unitdir/$unit" 0644
  rm -f "$unit_text"

  mkdir -p "$destdir$confdir"
  chmod 0755 "$destdir$confdir"
  if [ -e "$destdir$confdir/agent.toml" ]; then
    say "$destdir$confdir/agent.toml exists: kept"
  else
    install -m 0644 "$here/deploy/agent.toml.example" "$destdir$confdir/agent.toml"
    say "installed $destdir$confdir/agent.toml (every key, commented out: the defaults)"
  fi
  if [ -e "$destdir$confdir/agent.env" ]; then
    say "$destdir$confdir/agent.env exists: kept"
  else
    cat >"$destdir$confdir/agent.env" <<'EOF'
# Environment of shoal.service (EnvironmentFile=): SHOAL_* variables override
# /etc/shoal/agent.toml, and the command line overrides both. One per flag, e.g.:
# SHOAL_ADVERTISE_ADDR=192.0.2.10
# SHOAL_DNS=192.0.2.53,192.0.2.54
# SHOAL_LOG=debug
EOF
    chmod 0644 "$destdir$confdir/agent.env"
    say "installed $destdir$confdir/agent.env"
  fi
  mkdir -p "$destdir$statedir"
  chmod 0700 "$destdir$statedir"

  if [ -z "$destdir" ] && ! command -v nft >/dev/null; then
    if command -v apt-get >/dev/null; then
      say "installing nftables (the gateway bridge's masquerade)"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables >/dev/null
    else
      say "warning: nft is missing: install nftables, which tasks need to reach the outside world"
    fi
  fi

  if [ "$systemd" != yes ]; then
    say "not enabling or starting $unit: $systemd; start the agent by hand with: $bindir/shoal agent --config $confdir/agent.toml"
    return
  fi
  systemctl daemon-reload
  # Type=notify: both return once the agent said READY=1 (or failed).
  if systemctl is-active --quiet "$unit" && [ "$changed" = yes ]; then
    systemctl --quiet enable "$unit"
    systemctl restart "$unit" || die "restarting $unit failed: see journalctl -u shoal"
    say "restarted $unit (its tasks keep running)"
  else
    systemctl --quiet enable --now "$unit" || die "starting $unit failed: see journalctl -u shoal"
    say "$unit enabled and running"
  fi
}

# The node's data path, tasks and (with --purge) state go through `shoal agent --purge`,
# which knows where the agent keeps them and refuses while an agent still runs.
purge_node() {
  if [ ! -e "$destdir$confdir/agent.toml" ] && [ ! -e "$destdir$statedir" ]; then
    say "no config and no state dir: no node to clean up"
    return
  fi
  if [ -n "$destdir" ] && [ ! -e "$destdir$statedir/node-id" ] && [ ! -e "$destdir$statedir/lock" ]; then
    say "no agent ever ran on $destdir$statedir: no node to clean up"
    return
  fi
  local shoal=$destdir$bindir/shoal
  if [ ! -x "$shoal" ]; then
    if [ -n "$binary" ]; then
      shoal=$binary
    elif command -v shoal >/dev/null; then
      shoal=$(command -v shoal)
    else
      die "no shoal binary to clean the node up with ($destdir$bindir/shoal is gone): pass --binary PATH"
    fi
  fi
  local args=(agent --purge)
  [ -f "$destdir$confdir/agent.toml" ] && args+=(--config "$destdir$confdir/agent.toml")
  if [ -n "$destdir" ]; then
    # A staging root's node, never the host's: the paths under DESTDIR win over the file.
    args+=(--state-dir "$destdir$statedir" --socket "$destdir$rundir/shoal.sock")
  fi
  (
    if [ -f "$destdir$confdir/agent.env" ]; then
      set -a
      # shellcheck disable=SC1091
      . "$destdir$confdir/agent.env"
      set +a
    fi
    "$shoal" "${args[@]}"
  ) | sed 's/^/install: /'
}

do_uninstall() {
  if [ "$systemd" = yes ]; then
    if [ -e "$unitdir/$unit" ]; then
      systemctl --quiet disable --now "$unit" || true
      say "$unit stopped and disabled"
    fi
  fi
  if [ "$action" = purge ]; then
    purge_node
  fi
  for f in "$destdir$unitdir/$unit" "$destdir$bindir/shoal"; do
    if [ -e "$f" ]; then
      rm -f "$f"
      say "removed $f"
    fi
  done
  [ "$systemd" = yes ] && systemctl daemon-reload
  if [ "$action" = purge ]; then
    for d in "$destdir$confdir" "$destdir$statedir" "$destdir$rundir"; do
      if [ -e "$d" ]; then
        # Never through a mount (a namespace an agent still holds, a bind mount).
        if awk -v d="$d" '$5 == d || index($5, d "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
          die "$d still has mounts: stop the agent using it, then run --purge again"
        fi
        rm -rf "$d"
        say "removed $d"
      fi
    done
    say "purged"
  else
    say "uninstalled; kept $destdir$confdir, $destdir$statedir, the node's tasks and data path (--purge removes them)"
  fi
}

case "$action" in
  install) do_install ;;
  uninstall | purge) do_uninstall ;;
esac
