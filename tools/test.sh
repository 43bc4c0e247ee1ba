#!/usr/bin/env bash
# The test command: installs what is missing, builds the whole workspace (engine binary
# and plugin libraries, which the integration tests start and load), then runs every
# test. Everything is built in the release profile, so RocksDB is compiled only once.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh
cargo build --release --workspace --locked
cargo test --release --workspace --locked "$@"
