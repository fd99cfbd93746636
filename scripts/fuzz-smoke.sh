#!/usr/bin/env bash
# A short fuzz run of every cargo-fuzz target in fuzz/ (nightly): installs cargo-fuzz if it is
# missing, then runs each target for SECONDS (default 20) from its seed corpus in
# fuzz/corpus/TARGET/. New inputs go to a scratch directory, not into the repository; a crash
# fails the script and leaves the input under fuzz/artifacts/TARGET/.
# usage: scripts/fuzz-smoke.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
secs=${1:-20}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd fuzz
cargo +nightly fuzz build
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in $(cargo +nightly fuzz list); do
    mkdir -p "$scratch/$t"
    echo "fuzz: $t for ${secs}s"
    if ! cargo +nightly fuzz run "$t" "$scratch/$t" "corpus/$t" -- -max_total_time="$secs" \
        >"$scratch/$t.log" 2>&1; then
        tail -n 60 "$scratch/$t.log"
        echo "fuzz: $t FAILED (the input is under fuzz/artifacts/$t/)"
        exit 1
    fi
    grep -E '^(Done [0-9]+ runs|#[0-9]+ +DONE)' "$scratch/$t.log" || tail -n 2 "$scratch/$t.log"
done
