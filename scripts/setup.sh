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
pkgs=(libseccomp-dev liburing-dev clang-19 gcc make pkg-config python3 procps coreutils util-linux git nodejs busybox-static binutils openssl curl ca-certificates postgresql sqlite3
  tmux chromium chromium-driver systemd)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# VM tests (cargo xtask vm-test): QEMU 10 and the 6.12 kernel come from bookworm-backports.
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1)
  mirror=${mirror:-$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)}
  mirror=${mirror:-http://deb.debian.org/debian}
  log "adding bookworm-backports ($mirror) to apt's sources"
  cat > /etc/apt/sources.list.d/bookworm-backports.sources <<EOF
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt-get update -qq
fi
qemu_major=$(qemu-system-x86_64 --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\).*/\1/p')
if [ "${qemu_major:-0}" -lt 10 ]; then
  log "apt-get install -t bookworm-backports qemu-system-x86 (QEMU 10)"
  apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
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
# The proxy's end-to-end tests drive the real AWS CLI and boto3 against a local moto server.
if ! command -v aws >/dev/null 2>&1 || ! command -v moto_server >/dev/null 2>&1 \
    || ! python3 -c 'import boto3' >/dev/null 2>&1; then
  log "pip install awscli boto3 moto[server]"
  python3 -m pip install --quiet --disable-pip-version-check awscli boto3 'moto[server]' \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
      awscli boto3 'moto[server]'
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
fi
# The web approval page's tests drive Debian's chromium through Selenium with an explicit
# chromedriver path (Selenium Manager would try to download a driver).
if ! python3 -c 'import selenium' >/dev/null 2>&1; then
  log "pip install selenium"
  python3 -m pip install --quiet --disable-pip-version-check selenium \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages selenium
fi
# ... and the real Claude Code CLI against a local fake of the Messages API.
if ! command -v claude >/dev/null 2>&1; then
  log "npm install -g @anthropic-ai/claude-code"
  npm install -g --silent @anthropic-ai/claude-code
fi
log "ready"
