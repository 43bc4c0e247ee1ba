#!/usr/bin/env bash
# Installs the system packages Leasehold builds against, when they are missing, and
# sets the shared cargo target directory. Sourced by tools/demo.sh and tools/test.sh.
#
# RocksDB's C++ build takes 12-13 minutes per profile on a clean target directory, so
# every script uses one persistent target directory under $HOME unless told otherwise.
set -euo pipefail

packages=(capnproto clang libclang-dev libibverbs-dev librdmacm-dev pkg-config iproute2)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    sudo_command=""
    [ "$(id -u)" -eq 0 ] || sudo_command="sudo"
    $sudo_command apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_command apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is missing; install the Rust toolchain (rustup) first" >&2
    exit 1
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/leasehold-target}"
mkdir -p "$CARGO_TARGET_DIR"
