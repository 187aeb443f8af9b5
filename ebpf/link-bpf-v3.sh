#!/bin/sh
# The linker dataplane/build.rs gives cargo for the eBPF object: bpf-linker, for BPF ISA v3
# (kernel >= 5.1; shoal needs 6.6+ anyway) instead of the "generic" CPU rustc asks for.
#
# Why: the round-robin cursor needs an atomic fetch-add (BPF_FETCH), which only v3 has; for
# "generic" LLVM refuses it ("Invalid usage of the XADD return value"). aya-build sets the
# rustflags itself (so no -C target-cpu), and bpf-linker takes --cpu only once.
for arg do
  shift
  if [ "${prev:-}" = "--cpu" ]; then
    arg=v3
  fi
  prev=$arg
  set -- "$@" "$arg"
done
exec bpf-linker "$@"
