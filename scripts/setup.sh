#!/usr/bin/env bash
# Installs everything shoal needs to build, run and test on a fresh Debian machine (as root).
# Idempotent: a second run checks what is there and finishes in seconds.
#
#   - Debian packages: iproute2, nftables, util-linux (nsenter), procps, curl, iperf3
#     (benchmarks), tcpdump (overlay tests), dnsmasq-base, unbound, dig and dnsperf (the DNS
#     tests' upstream resolver and the DNS benchmark's peers), haproxy and wrk (the VIP
#     benchmark's userspace proxy peer and HTTP load generator), ethtool (the test underlay's
#     offload settings: GRO for XDP_TX on veth, full checksums from the outside client),
#     systemd (systemd-analyze verify checks deploy/shoal.service), python3, ruby (`ruby -c`
#     checks the Vagrantfile), ping (a task pings a VIP), runc, tini and PyYAML
#     (scripts/agent-rootfs.sh's bundle, run under runc by the container tests)
#   - docker-py (PyPI `docker`), which the Engine API tests drive shoal with
#   - the pinned nightly with rust-src, which builds the eBPF object (ebpf/toolchain.env)
#   - bpf-linker, built against that nightly's own LLVM, under $SHOAL_TOOLCHAIN_DIR
#   - bpffs mounted at /sys/fs/bpf
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../ebpf/toolchain.env
source "$here/ebpf/toolchain.env"
toolchain_dir=${SHOAL_TOOLCHAIN_DIR:-/opt/shoal-toolchain}

say() { printf 'setup: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: shoal needs root (network namespaces, eBPF, bpffs); run as root" >&2
  exit 1
fi

# --- Debian packages -------------------------------------------------------------------------
need_pkgs=()
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v nft >/dev/null || need_pkgs+=(nftables)
command -v nsenter >/dev/null || need_pkgs+=(util-linux)
command -v pkill >/dev/null || need_pkgs+=(procps)
command -v curl >/dev/null || need_pkgs+=(curl)
command -v iperf3 >/dev/null || need_pkgs+=(iperf3)
command -v tcpdump >/dev/null || need_pkgs+=(tcpdump)
command -v dnsmasq >/dev/null || need_pkgs+=(dnsmasq-base)
command -v unbound >/dev/null || need_pkgs+=(unbound)
command -v dig >/dev/null || need_pkgs+=(bind9-dnsutils)
command -v dnsperf >/dev/null || need_pkgs+=(dnsperf)
command -v haproxy >/dev/null || need_pkgs+=(haproxy)
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v ethtool >/dev/null || need_pkgs+=(ethtool)
command -v systemd-analyze >/dev/null || need_pkgs+=(systemd)
command -v python3 >/dev/null || need_pkgs+=(python3)
command -v ruby >/dev/null || need_pkgs+=(ruby)
command -v ping >/dev/null || need_pkgs+=(iputils-ping)
command -v runc >/dev/null || need_pkgs+=(runc)
command -v tini >/dev/null || need_pkgs+=(tini)
python3 -c 'import yaml' 2>/dev/null || need_pkgs+=(python3-yaml)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# --- docker-py ---------------------------------------------------------------------------------
docker_py_version=7.1.0
if ! python3 -c 'import docker' 2>/dev/null; then
  if python3 -m pip --version >/dev/null 2>&1; then
    say "installing docker-py $docker_py_version (pip)"
    # Debian's own python refuses pip installs outside a venv unless told (PEP 668).
    python3 -m pip install --quiet "docker==$docker_py_version" 2>/dev/null \
      || python3 -m pip install --quiet --break-system-packages "docker==$docker_py_version"
  else
    say "installing docker-py (python3-docker)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-docker >/dev/null
  fi
fi

# --- eBPF toolchain --------------------------------------------------------------------------
stamp="$toolchain_dir/stamp"
want="$SHOAL_BPF_NIGHTLY bpf-linker-$SHOAL_BPF_LINKER_VERSION llvm-$SHOAL_BPF_LLVM_MAJOR"
if ! rustup run "$SHOAL_BPF_NIGHTLY" rustc --version >/dev/null 2>&1 \
  || [ ! -d "$(rustup run "$SHOAL_BPF_NIGHTLY" rustc --print sysroot)/lib/rustlib/src" ]; then
  say "installing $SHOAL_BPF_NIGHTLY with rust-src"
  rustup toolchain install "$SHOAL_BPF_NIGHTLY" --profile minimal -c rust-src >/dev/null
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x "$toolchain_dir/bin/bpf-linker" ]; then
  sysroot=$(rustup run "$SHOAL_BPF_NIGHTLY" rustc --print sysroot)
  libllvm=$(find "$sysroot/lib" -maxdepth 1 -name "libLLVM.so.$SHOAL_BPF_LLVM_MAJOR*" | head -n 1)
  if [ -z "$libllvm" ]; then
    echo "setup: $SHOAL_BPF_NIGHTLY ships no libLLVM.so.$SHOAL_BPF_LLVM_MAJOR*; fix ebpf/toolchain.env" >&2
    exit 1
  fi
  # bpf-linker links libLLVM dynamically from $LLVM_PREFIX/lib and records that path as rpath.
  mkdir -p "$toolchain_dir/llvm/lib"
  ln -sf "$libllvm" "$toolchain_dir/llvm/lib/libLLVM.so"
  ln -sf "$libllvm" "$toolchain_dir/llvm/lib/$(basename "$libllvm")"
  say "building bpf-linker $SHOAL_BPF_LINKER_VERSION against LLVM $SHOAL_BPF_LLVM_MAJOR (about a minute)"
  LLVM_PREFIX="$toolchain_dir/llvm" cargo install --quiet --locked --force \
    --root "$toolchain_dir" bpf-linker --version "$SHOAL_BPF_LINKER_VERSION" \
    --no-default-features --features "llvm-$SHOAL_BPF_LLVM_MAJOR"
  echo "$want" >"$stamp"
fi

# --- bpffs -----------------------------------------------------------------------------------
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

say "ready (eBPF toolchain in $toolchain_dir)"
