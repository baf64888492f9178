#!/usr/bin/env bash
# Download the official CIFAR-10 binary release, check its MD5 and unpack it
# as cifar-10-batches-bin/: a thin wrapper over `trainer fetch`, which holds
# the URL and the checksum (GAPNET_CIFAR10_URL / GAPNET_CIFAR10_MD5 override
# them). The trainer does the same by itself on first use.
#
#   scripts/fetch-cifar10.sh              # into the cache folder (where the trainer looks)
#   scripts/fetch-cifar10.sh DIR          # into DIR/cifar-10-batches-bin (same as --to DIR)
#   scripts/fetch-cifar10.sh --to DIR
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
# The old form took the folder as its only argument.
if [ $# -eq 1 ] && [ "${1#-}" = "$1" ]; then
    set -- --to "$1"
fi
# No `cd`: a relative DIR is relative to where the script is called from.
exec cargo run --manifest-path "$repo/Cargo.toml" -p trainer --release -- fetch "$@"
