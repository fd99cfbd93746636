#!/usr/bin/env bash
# Installs what building and testing Guard needs on a fresh Debian 12 machine with rustup.
# Idempotent: steps already done are skipped. Run as root.
set -euo pipefail

log() { printf 'setup: %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (apt packages, and the tests need root)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
pkgs=(libseccomp-dev clang-19 gcc make pkg-config python3 procps coreutils util-linux)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The eBPF crate needs a nightly toolchain with rust-src. bpf-linker 0.10.3 uses that nightly's
# own LLVM (22); a much newer nightly may bring an LLVM it cannot load, so an installed nightly
# is kept as it is (never `rustup update` it).
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  log "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  log "adding rust-src to nightly"
  rustup component add rust-src --toolchain nightly
fi
log "$(rustup run nightly rustc -vV | grep -E '^(release|LLVM)' | tr '\n' ' ')"

if ! command -v bpf-linker >/dev/null 2>&1; then
  log "cargo install bpf-linker 0.10.3 (about 2 minutes)"
  cargo install bpf-linker --version 0.10.3 --locked
fi
log "ready"
