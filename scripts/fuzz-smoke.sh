#!/usr/bin/env bash
# A short fuzz run of every cargo-fuzz target in fuzz/ (nightly): installs cargo-fuzz if it is
# missing, then runs each target for SECONDS (default 20) from its seed corpus in
# fuzz/corpus/TARGET/. New inputs go to a scratch directory, not into the repository; a crash
# fails the script and leaves the input under fuzz/artifacts/TARGET/.
#
# --ci: the build CI can afford (coverage-guided all the same): no sanitizer (`-s none`), the
# dev profile without debug info (opt-level 0: a cold build of the dependency tree took 221 s of
# CPU here instead of the release + ASan build's 17 minutes), into target/fuzz-ci (kept between
# runs where target/ is). A panic, an overflow (debug assertions are on) or a timeout is still a
# crash. Without --ci: release + AddressSanitizer, as cargo-fuzz does by default.
# --ci does not need cargo-fuzz (installing it builds it from source, 4.7 minutes): it runs
# cargo with the flags `cargo fuzz build -s none --dev` sets (cargo-fuzz 0.13.2,
# src/project.rs) and the libFuzzer binaries directly.
# usage: scripts/fuzz-smoke.sh [--ci] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if [ "${1:-}" = "--ci" ]; then
    shift
    secs=${1:-20}
    export CARGO_PROFILE_DEV_DEBUG=0
    export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Cllvm-args=-sanitizer-coverage-stack-depth \
-Cdebug-assertions"
    triple=$(rustc +nightly -vV | sed -n 's/^host: //p')
    dir="$PWD/target/fuzz-ci"
    t0=$(date +%s)
    # --target: RUSTFLAGS then apply to the fuzzed code only, not to build scripts.
    cargo +nightly build --manifest-path fuzz/Cargo.toml --target "$triple" --target-dir "$dir" --bins
    echo "fuzz: built in $(($(date +%s) - t0)) s"
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    for src in fuzz/fuzz_targets/*.rs; do
        t=$(basename "$src" .rs)
        mkdir -p "$scratch/$t" "fuzz/artifacts/$t"
        echo "fuzz: $t for ${secs}s"
        if ! "$dir/$triple/debug/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$secs" \
            "$scratch/$t" "fuzz/corpus/$t" >"$scratch/$t.log" 2>&1; then
            tail -n 60 "$scratch/$t.log"
            echo "fuzz: $t FAILED (the input is under fuzz/artifacts/$t/)"
            exit 1
        fi
        grep -E '^(Done [0-9]+ runs|#[0-9]+ +DONE)' "$scratch/$t.log" || tail -n 2 "$scratch/$t.log"
    done
    echo "fuzz: done in $(($(date +%s) - t0)) s"
    exit 0
fi
build=()
secs=${1:-20}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd fuzz
t0=$(date +%s)
cargo +nightly fuzz build "${build[@]}"
echo "fuzz: built in $(($(date +%s) - t0)) s"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in $(cargo +nightly fuzz list); do
    mkdir -p "$scratch/$t"
    echo "fuzz: $t for ${secs}s"
    if ! cargo +nightly fuzz run "${build[@]}" "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$secs" >"$scratch/$t.log" 2>&1; then
        tail -n 60 "$scratch/$t.log"
        echo "fuzz: $t FAILED (the input is under fuzz/artifacts/$t/)"
        exit 1
    fi
    grep -E '^(Done [0-9]+ runs|#[0-9]+ +DONE)' "$scratch/$t.log" || tail -n 2 "$scratch/$t.log"
done
echo "fuzz: done in $(($(date +%s) - t0)) s"
