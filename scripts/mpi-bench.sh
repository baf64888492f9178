#!/usr/bin/env bash
# One epoch of seed-fc and seed-gap (modern recipe, batch 64, all 10,000
# training images) trained three ways on this machine, same run, same bits:
# one process with 1 thread, one process with 2 threads, and 2 MPI ranks
# with 1 thread each. Prints a Markdown table: epoch seconds, training
# images/s, and for the ranks the share of the training time spent passing
# the gradients along and waiting for them (per step, as the epoch line says).
#
#   scripts/mpi-bench.sh [EPOCHS]   # epochs per run (default 2; the last one is reported)
#
# Needs Open MPI (Debian: openmpi-bin libopenmpi-dev libclang-dev); builds
# the trainer with --features mpi. A benchmark, not a test: run it on a
# quiet machine. See docs/scaling.md for what the numbers mean.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
epochs="${1:-2}"
cargo build --release -p trainer --features mpi -q
bin="$repo/target/release/trainer"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
root=()
[ "$(id -u)" = 0 ] && root=(--allow-run-as-root)

echo "| model | processes x threads | epoch s | train img/s | comm share | comm ms/step |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
for model in seed-fc seed-gap; do
    for how in "1x1" "1x2" "2x1"; do
        ranks=${how%x*}
        threads=${how#*x}
        args=(train --model "$model" --epochs "$epochs" --threads "$threads" --out "$tmp/$model-$how")
        if [ "$ranks" = 1 ]; then
            "$bin" "${args[@]}" > "$tmp/log" 2>&1
        else
            mpirun "${root[@]}" -np "$ranks" --bind-to none "$bin" "${args[@]}" > "$tmp/log" 2>&1
        fi
        line=$(grep " epoch .*$epochs/$epochs " "$tmp/log" | tail -1)
        secs=$(sed -E 's/.* ([0-9.]+)s ([0-9]+) img\/s.*/\1/' <<< "$line")
        rate=$(sed -E 's/.* ([0-9.]+)s ([0-9]+) img\/s.*/\2/' <<< "$line")
        share=$(grep -oE 'comm [0-9.]+%' <<< "$line" | cut -d' ' -f2 || true)
        per=$(grep -oE '\(([0-9.]+) ms/step\)' <<< "$line" | tr -d '(' | cut -d' ' -f1 || true)
        echo "| $model | $ranks x $threads | $secs | $rate | ${share:--} | ${per:--} |"
    done
done
