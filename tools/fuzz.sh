#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of what Leasehold decodes from
# untrusted sources: client requests, peer frames and plugin arguments (targets in
# fuzz/fuzz_targets, seeds in fuzz/seeds). Installs cargo-fuzz when missing.
#
#   tools/fuzz.sh                  the CI-sized run: every target, a fixed seed, RUNS inputs
#   RUNS=2000000 tools/fuzz.sh     a long run
#   SEED=7 tools/fuzz.sh request_decoding    one target, another seed
#
# cargo-fuzz normally wants a nightly compiler for its sanitizer flags. Without a
# sanitizer (`-s none`; the targets are safe Rust over safe decoders, and what they check
# are panics and broken promises) it passes stable flags only, and RUSTC_BOOTSTRAP lets
# the stable compiler accept cargo-fuzz's build either way. The fuzz workspace has its own
# target directory (its instrumentation flags differ). RocksDB's C++ is not instrumented
# (the targets never reach storage), so the fuzz build links the librocksdb.a that the
# main release build already made instead of spending 12-13 minutes compiling it again.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh
RUNS="${RUNS:-20000}"
SEED="${SEED:-1}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --version 0.13.2 --locked --quiet
fi
# One fuzz target directory per checkout: the fuzz workspace reaches the plugins and the
# SDK as path dependencies outside it, whose artifacts carry no trace of the checkout's
# path in their names, so two checkouts sharing one directory (CI's clean clone and a
# working tree) mixed SDKs built from both ("a different PluginDescriptor").
checkout_key=$(pwd -P | sha256sum | cut -c1-12)
fuzz_target_dir="$CARGO_TARGET_DIR/fuzz-$checkout_key"
prebuilt_rocksdb=$(find "$CARGO_TARGET_DIR/release/build" -path '*librocksdb-sys-*/out/librocksdb.a' \
    -print -quit 2>/dev/null || true)
if [ -n "$prebuilt_rocksdb" ]; then
    export ROCKSDB_LIB_DIR="$(dirname "$prebuilt_rocksdb")" ROCKSDB_STATIC=1
else
    echo "fuzz: no release build of RocksDB under $CARGO_TARGET_DIR; compiling it for the fuzz build" >&2
fi
export RUSTC_BOOTSTRAP=1
# cargo fuzz SUBCOMMAND [ARGUMENTS...]: cargo-fuzz's options go before the target and
# corpus arguments (everything after `--` is libFuzzer's).
fuzz() {
    local subcommand="$1"
    shift
    cargo fuzz "$subcommand" -O -s none --target-dir "$fuzz_target_dir" "$@"
}
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
fuzz build
for target in "${targets[@]}"; do
    corpus="$(mktemp -d)"
    seeds="fuzz/seeds/$target"
    mkdir -p "$seeds"
    started=$(date +%s)
    # The first corpus directory collects what this run finds; the seeds stay as committed.
    if ! fuzz run "$target" "$corpus" "$seeds" -- -runs="$RUNS" -seed="$SEED" -max_len=4096 \
        -print_final_stats=1 >"$corpus.log" 2>&1; then
        tail -n 40 "$corpus.log" >&2
        echo "fuzz: $target FAILED (seed $SEED); the crashing input is under fuzz/artifacts/$target" >&2
        exit 1
    fi
    elapsed=$(( $(date +%s) - started ))
    coverage=$(grep -o 'cov: [0-9]*' "$corpus.log" | tail -n 1)
    executed=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$corpus.log" | grep -o '[0-9]*$')
    echo "fuzz: $target: $executed inputs, seed $SEED, ${coverage:-cov: ?} edges, $(find "$corpus" -type f | wc -l) new corpus entries, ${elapsed} s"
    rm -rf "$corpus" "$corpus.log"
done
