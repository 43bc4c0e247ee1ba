#!/usr/bin/env bash
# The main job: installs what is missing, builds the workspace, starts an embedded
# single-node engine, deploys the banking plugin, runs a short transfer load and prints
# what happened. Extra arguments go to `leasehold bench` (see `leasehold bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh
cargo build --release --workspace --locked
# The defaults of `leasehold bench` are the main job: banking, 100,000 accounts, 4 clients,
# 10 s; arguments given here override them.
exec "$CARGO_TARGET_DIR/release/leasehold" bench "$@"
