#!/usr/bin/env bash
# Run every command behind docs/results.md, in order, into one folder.
#
#   scripts/reproduce.sh [OUT]     # default: results/reproduce-<UTC timestamp>
#   EPOCHS=500 scripts/reproduce.sh   # section 4's comparisons' length (default 100)
#   LONG=1 scripts/reproduce.sh       # also section 2's 5,000-epoch seed-gap run (hours: see results.md)
#   WIDE_EPOCHS=100 scripts/reproduce.sh  # wide-gap's (default 30: it is ~5x the work of the others)
#   DOCS=1 scripts/reproduce.sh       # also copy the figures into docs/ under the names results.md uses
#   THREADS=2 scripts/reproduce.sh    # worker threads (default: every core)
#   QUICK=1 scripts/reproduce.sh      # a smoke test of the script: 2 epochs on 1,000 / 300 images
#   GAPNET_PORTABLE=1 scripts/reproduce.sh   # the portable kernels: docs/results.md's numbers bit for bit
#                                            # (the AVX2 and AVX-512 kernels round differently)
#
# Long: several hours on a 2-core machine (section 2's 500-epoch comparison
# alone took 1 h 39 min with the portable kernels beside other work; see
# docs/results.md for each run's time). Not part of the tests. Every command is echoed and appended to OUT/commands.txt, its
# output to OUT/log.txt; OUT/tables.md collects the numbers results.md
# quotes. Training is deterministic: the same commands give the same
# numbers bit for bit (with any thread count), except seconds and images/s.
# A comparison that fails (e.g. a diverging model) is logged and skipped.
set -uo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
out="${1:-results/reproduce-$(date -u +%Y%m%dT%H%M%SZ)}"
epochs="${EPOCHS:-100}"
wide_epochs="${WIDE_EPOCHS:-30}"
default_epochs=35
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")
limits=()
if [ "${QUICK:-0}" = 1 ]; then
    epochs=2 wide_epochs=2 default_epochs=2 limits=(--limit-train 1000 --limit-test 300)
fi
mkdir -p "$out"
trainer=target/release/trainer
models=seed-fc,seed-gap,seed-fc20

cargo build -p trainer --release || exit 1

# Echo a command, record it, run it with its output also in log.txt.
run() {
    echo "+ $*" | tee -a "$out/commands.txt" >&2
    "$@" 2>&1 | tee -a "$out/log.txt"
    local status=${PIPESTATUS[0]}
    [ "$status" -eq 0 ] || echo "FAILED (exit $status): $*" | tee -a "$out/commands.txt" >&2
    return "$status"
}

# Markdown rows from a run's metrics.csv: every `step`-th epoch and the last,
# test accuracy, the blog's error (train_seed_error) and seconds per epoch.
epoch_rows() { # model dir step
    awk -F, -v m="$1" -v step="$3" 'NR > 1 { last = $0; if ($1 % step == 0 || $1 == 1) printf "| %s | %d | %.4f | %.4f | %.1f |\n", m, $1, $7, $4, $8 }
        END { split(last, f, ","); if (f[1] % step != 0) printf "| %s | %d | %.4f | %.4f | %.1f |\n", m, f[1], f[7], f[4], f[8] }' "$2/metrics.csv"
}

# Mean seconds per epoch and images/s of a run.
speed_row() { # model dir
    awk -F, -v m="$1" 'NR > 1 { s += $8; ips += $9; n++ } END { printf "| %s | %.1f | %.0f |\n", m, s / n, ips / n }' "$2/metrics.csv"
}

# The planes whose removal alone changed no prediction, from a scan table.
idle_planes() { # scan.md
    awk -F'|' '$4 ~ /\+0\.0000/ && $5 + 0 == 0 && $6 + 0 == 0 { gsub(/ /, "", $2); printf "%s%s", sep, $2; sep = "," }' "$1"
}

# The episode's wish: for each of the most confidently misclassified test
# images, remove the plane that pushed hardest toward the wrong class (from
# explain's examples.csv) and see whether that fixes it, and at what cost.
culprits() { # checkpoint examples.csv
    echo "| rank | test image | culprit plane | its share of the wrong margin | after pruning it | test accuracy after |"
    echo "| ---: | ---: | ---: | ---: | --- | ---: |"
    awk -F, '$1 == "misclassified" { k = $2; img[k] = $3; if ($7 == $5) cp[k "," $9] = $12; else ct[k "," $9] = $12; if ($9 + 1 > n) n = $9 + 1 }
        END { for (k = 1; k in img; k++) { best = -1e30; for (p = 0; p < n; p++) { d = cp[k "," p] - ct[k "," p]; if (d > best) { best = d; bp = p } }
              print k, img[k], bp, best } }' "$2" |
        while read -r rank image plane share; do
            echo "+ $trainer prune ${threads[*]} --checkpoint $1 --planes $plane" >>"$out/commands.txt"
            result=$("$trainer" prune "${threads[@]}" --checkpoint "$1" --planes "$plane")
            acc=$(sed -n 's/^test accuracy before .*, after \([0-9.]*\) .*change \(.*\)$/\1 (\2)/p' <<<"$result")
            if grep -E "^  image +$image:" <<<"$result" | grep -q ", fixed)"; then verdict=fixed; else verdict="still wrong"; fi
            printf "| %s | %s | %s | %+.3f | %s | %s |\n" "$rank" "$image" "$plane" "$share" "$verdict" "$acc"
        done
}

tables="$out/tables.md"
echo "# Numbers for docs/results.md ($(date -u +%Y-%m-%dT%H:%MZ), EPOCHS=$epochs)" >"$tables"

# Section 1: the README's default run (35 epochs, modern recipe, seed-fc vs seed-gap).
run "$trainer" compare "${threads[@]}" "${limits[@]}" --epochs "$default_epochs" --out "$out/default-35"

# Section 2: the author's engine (--recipe seed) for the episode's 500 epochs,
# both heads; with LONG=1 also the 5,000-epoch GAP run.
seed_epochs=500 long_epochs=5000
[ "${QUICK:-0}" = 1 ] && seed_epochs=2 long_epochs=3
run "$trainer" compare "${threads[@]}" "${limits[@]}" --recipe seed --epochs "$seed_epochs" --checkpoint-every 10 \
    --out "$out/seed-500"
if [ "${LONG:-0}" = 1 ]; then
    run "$trainer" train "${threads[@]}" "${limits[@]}" --model seed-gap --recipe seed --epochs "$long_epochs" \
        --checkpoint-every 25 --out "$out/seed-gap-5000"
fi

# Section 4: all four presets with each recipe; wide-gap, ~5x the work, runs
# for fewer epochs in a comparison of its own.
run "$trainer" compare "${threads[@]}" "${limits[@]}" --models "$models" --epochs "$epochs" --checkpoint-every 10 --out "$out/modern"
run "$trainer" compare "${threads[@]}" "${limits[@]}" --models "$models" --recipe seed --epochs "$epochs" \
    --checkpoint-every 10 --out "$out/seed"
run "$trainer" compare "${threads[@]}" "${limits[@]}" --models wide-gap --epochs "$wide_epochs" --checkpoint-every 10 \
    --out "$out/wide-modern"
run "$trainer" compare "${threads[@]}" "${limits[@]}" --models wide-gap --recipe seed --epochs "$wide_epochs" \
    --checkpoint-every 10 --out "$out/wide-seed"

for recipe in modern seed wide-modern wide-seed; do
    [ -f "$out/$recipe/summary.md" ] || continue
    n=$epochs ms=$models
    case $recipe in wide-*) n=$wide_epochs ms=wide-gap ;; esac
    step=$((n >= 40 ? n / 4 : 10))
    { echo; echo "## $recipe recipe, $n epochs"; echo; cat "$out/$recipe/summary.md"; echo
      echo "| model | mean seconds per epoch | images/s |"; echo "| --- | ---: | ---: |"
      for m in ${ms//,/ }; do speed_row "$m" "$out/$recipe/$m"; done; echo
      echo "| model | epoch | test acc | seed error | seconds |"; echo "| --- | ---: | ---: | ---: | ---: |"
      for m in ${ms//,/ }; do epoch_rows "$m" "$out/$recipe/$m" "$step"; done; } >>"$tables"
done

# Sections 5 and 6: look inside the default run's two models, then every model of the modern run.
for run_dir in "$out/default-35/seed-gap" "$out/default-35/seed-fc" "$out/modern/"{seed-fc,seed-gap,seed-fc20} \
    "$out/wide-modern/wide-gap"; do
    ckpt="$run_dir/model.safetensors"
    [ -f "$ckpt" ] || continue
    look="$out/look-inside/$(basename "$(dirname "$run_dir")")-$(basename "$run_dir")"
    run "$trainer" explain "${threads[@]}" --checkpoint "$ckpt" --top 6 --out "$look" || continue
    run "$trainer" prune "${threads[@]}" --checkpoint "$ckpt" --scan >"$look/scan.txt"
    grep '^|' "$look/scan.txt" >"$look/scan.md"
    { echo; echo "## $look"; echo; head -1 "$look/scan.txt"; echo
      cat "$look/scan.md"; echo; culprits "$ckpt" "$look/examples.csv"; } >>"$tables"
    idle=$(idle_planes "$look/scan.md")
    if [ -n "$idle" ]; then
        run "$trainer" prune "${threads[@]}" --checkpoint "$ckpt" --planes "$idle" --out "$look/pruned-idle.safetensors" \
            >"$look/pruned-idle.txt"
        { echo; echo "Removing every plane whose removal alone changed nothing ($idle) at once:"; echo
          sed -n '2,3p' "$look/pruned-idle.txt"; } >>"$tables"
    fi
done

if [ "${DOCS:-0}" = 1 ]; then
    copy() { [ -f "$1" ] && cp "$1" "docs/$2" && echo "docs/$2 <- $1"; }
    copy "$out/default-35/curves.png" results-default-35.png
    copy "$out/seed-500/curves.png" results-seed-500.png
    copy "$out/seed-gap-5000/curves.png" results-seed-gap-5000.png
    copy "$out/modern/curves.png" results-modern-3presets.png
    copy "$out/seed/curves.png" results-seed-3presets.png
    copy "$out/wide-modern/curves.png" results-modern-wide-gap.png
    copy "$out/wide-seed/curves.png" results-seed-wide-gap.png
    copy "$out/look-inside/default-35-seed-gap/misclassified.png" cam-seed-gap-misclassified.png
    copy "$out/look-inside/default-35-seed-gap/correct.png" cam-seed-gap-correct.png
    copy "$out/look-inside/default-35-seed-fc/misclassified.png" gradcam-seed-fc-misclassified.png
fi
echo "done: commands in $out/commands.txt, numbers in $tables"
