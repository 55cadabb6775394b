#!/usr/bin/env bash
# Fuzzes the `chaos` target (fuzz/fuzz_targets/chaos.rs) for a while:
#
#     fuzz/run.sh [seconds]        # default 120
#
# Installs what is missing (the pinned nightly, cargo-fuzz), starts from the
# committed corpus (fuzz/corpus/chaos, read only: new inputs go to a scratch
# directory), prints the number of executions, and exits non-zero on a crash,
# leaving the input in fuzz/artifacts/chaos/.
set -euo pipefail

cd "$(dirname "$0")/.."

NIGHTLY=nightly-2026-05-20     # keep in sync with .ci/run
CARGO_FUZZ_VERSION=0.13.2
SECS=${1:-120}

if ! rustup run "$NIGHTLY" rustc --version >/dev/null 2>&1; then
    rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

scratch=$(mktemp -d)
log="$scratch/fuzz.log"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/corpus" fuzz/corpus/chaos

# Build first, so that build output stays out of the fuzzing log.
cargo "+$NIGHTLY" fuzz build chaos

status=0
cargo "+$NIGHTLY" fuzz run chaos "$scratch/corpus" fuzz/corpus/chaos -- \
    -max_total_time="$SECS" -timeout=60 -print_final_stats=1 >"$log" 2>&1 || status=$?

done_line=$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second\(s\)' "$log" | tail -n 1 || true)
if [ "$status" -ne 0 ] || [ -z "$done_line" ]; then
    tail -n 200 "$log"
    last=$(grep -Eo '^#[0-9]+' "$log" | tail -n 1 || true)
    echo "fuzz: FAILED after ${last:-#0} executions (exit status $status); the input is in fuzz/artifacts/chaos/"
    exit 1
fi
grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb):' "$log" || true
runs=${done_line#Done }
runs=${runs%% *}
echo "fuzz: chaos ran $runs executions without a crash ($done_line)"
