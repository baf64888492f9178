#!/usr/bin/env bash
# Print the criterion results of `cargo bench --bench step` as a Markdown
# table (medians from target/criterion/**/new/estimates.json). The
# per-layer bench (`cargo bench --bench layers`) prints its own table.
#
#   cargo bench --bench step && scripts/criterion-table.sh
#
# Needs python3 (standard library only).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${CRITERION_DIR:-target/criterion}
[ -d "$dir" ] || { echo "criterion-table.sh: no $dir; run cargo bench first" >&2; exit 1; }

python3 - "$dir" <<'EOF'
import json, os, sys

root = sys.argv[1]

def median_ns(*parts):
    path = os.path.join(root, *parts, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"]
    except FileNotFoundError:
        return None

def fmt(ns):
    if ns is None:
        return "-"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"

print("Whole network (median per call, images/s):\n")
print("| benchmark | time | images/s |")
print("| --- | ---: | ---: |")
for group in ["train", "infer"]:
    for preset in ["seed-fc", "seed-gap"]:
        for b in [64, 256]:
            ns = median_ns(group, preset, str(b))
            ips = f"{b / ns * 1e9:,.0f}" if ns else "-"
            print(f"| {group}/{preset}/{b} | {fmt(ns)} | {ips} |")
for preset in ["seed-fc", "seed-gap"]:
    tdir = os.path.join(root, "threads", preset)
    for t in sorted(os.listdir(tdir), key=int) if os.path.isdir(tdir) else []:
        ns = median_ns("threads", preset, t)
        print(f"| threads/{preset}/{t} | {fmt(ns)} | {64 / ns * 1e9:,.0f} |")
cdir = os.path.join(root, "ceiling")
for name in sorted(os.listdir(cdir)) if os.path.isdir(cdir) else []:
    ns = median_ns("ceiling", name)
    threads = int(name.split("_x")[1].split("_")[0])
    gflops = 2 * 512**3 * threads / ns
    print(f"\nSGEMM ceiling ({name}): {gflops:.1f} GFLOP/s")
EOF
