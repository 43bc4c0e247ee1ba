#!/usr/bin/env bash
# The main job: installs what is missing, builds the workspace, starts an embedded
# single-node engine, deploys the banking plugin, runs a short transfer load and prints
# what happened. Extra arguments go to `leasehold bench` (see `leasehold bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh
cargo build --release --workspace --locked
exec "$CARGO_TARGET_DIR/release/leasehold" bench --workload banking --duration-seconds 10 "$@"
