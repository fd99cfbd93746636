#!/usr/bin/env bash
# Installs the peers that `cargo xtask bench` compares `sandbox run` with: bubblewrap, firejail
# (Debian packages) and Anthropic's sandbox-runtime (npm, CLI `srt`, which also needs ripgrep and
# socat on Linux). Optional: the benchmark runs without them and says in its report which peers
# were missing or failed. Idempotent. Run as root.
set -euo pipefail

log() { printf 'install-bench-peers: %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "install-bench-peers: run as root (apt and npm -g)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
missing=()
for p in bubblewrap firejail ripgrep socat; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if command -v srt >/dev/null; then
  log "srt already installed"
elif command -v npm >/dev/null; then
  log "npm install -g @anthropic-ai/sandbox-runtime"
  npm install -g --no-fund --no-audit @anthropic-ai/sandbox-runtime >/dev/null
else
  log "npm not found (scripts/setup.sh installs nodejs): srt skipped"
fi

for c in bwrap firejail srt; do
  if command -v "$c" >/dev/null; then log "$c: $(command -v "$c")"; else log "$c: missing"; fi
done
