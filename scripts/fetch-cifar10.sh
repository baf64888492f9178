#!/usr/bin/env bash
# Download the official CIFAR-10 binary release, check its checksum, and
# unpack it as datasets/cifar-10-batches-bin/ (where the trainer looks).
#
#   scripts/fetch-cifar10.sh            # into <repo>/datasets/
#   scripts/fetch-cifar10.sh DIR        # into DIR/
#
# The archive's MD5 is the one published on the dataset's home page.
set -euo pipefail

url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
md5="c32a1d4ab5d03f1284b67883e8d87530"
repo="$(cd "$(dirname "$0")/.." && pwd)"
dest="${1:-$repo/datasets}"
archive="$dest/cifar-10-binary.tar.gz"

mkdir -p "$dest"
if [ -f "$dest/cifar-10-batches-bin/test_batch.bin" ]; then
    echo "already there: $dest/cifar-10-batches-bin"
    exit 0
fi
if [ ! -f "$archive" ]; then
    echo "downloading $url"
    if command -v curl >/dev/null; then
        curl -fL --retry 3 -o "$archive.part" "$url"
    else
        wget -O "$archive.part" "$url"
    fi
    mv "$archive.part" "$archive"
fi
echo "checking the checksum"
got="$(md5sum "$archive" | cut -d' ' -f1)"
if [ "$got" != "$md5" ]; then
    echo "error: $archive: MD5 $got, expected $md5 (corrupt or partial download; delete it and retry)" >&2
    exit 1
fi
tar -xzf "$archive" -C "$dest"
echo "unpacked: $dest/cifar-10-batches-bin"
echo "train with: cargo run -p trainer --release -- --data $dest/cifar-10-batches-bin"
