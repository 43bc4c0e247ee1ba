#!/usr/bin/env bash
# The test command: installs what is missing, builds the whole workspace (engine binary
# and plugin libraries, which the integration tests start and load), then runs every
# test. Everything is built in the release profile, so RocksDB is compiled only once.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup.sh
cargo build --release --workspace --locked
cargo test --release --workspace --locked "$@"
# The RDMA fabric backend must compile everywhere, even where no RDMA device exists to run
# it. leasehold-fabric does not depend on RocksDB, so this separate feature set rebuilds
# only the fabric and its bindings, never RocksDB.
cargo build --release -p leasehold-fabric --features rdma --locked
# Coverage-guided fuzzing, CI-sized (about half a minute; the first run on a machine
# also installs cargo-fuzz and builds the targets against the RocksDB built above).
bash tools/fuzz.sh
