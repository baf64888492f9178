#!/usr/bin/env bash
# Profile a short training run with `perf record` and draw a flamegraph
# (inferno). Works on virtual machines without hardware counters: it then
# samples the `cpu-clock` software event.
#
#   scripts/profile.sh                     # train seed-gap: 2 epochs of 5000 images
#   scripts/profile.sh train --model seed-fc --epochs 1 --limit-train 3000
#   FLAMEGRAPH=docs/flamegraph.svg scripts/profile.sh
#
# Arguments are the trainer's (default: the short seed-gap run above); for
# `train`/`compare` without `--out` the run goes to $PROFILE_DIR/run.
# Environment:
#   PROFILE_DIR  perf.data, folded stacks, SVG, the run (default target/profile)
#   FLAMEGRAPH   path of the SVG (default $PROFILE_DIR/flamegraph.svg)
#   PERF_FREQ    samples per second (default 997)
#   PERF_EVENT   event to sample (default: cycles if the CPU counts them, else cpu-clock)
#   CALL_GRAPH   fp (frame pointers, default) or dwarf (unwind tables: also shows
#                inlined frames and the true caller of libc's memcpy/memset, which
#                have no frame pointer and so appear under their caller's caller
#                with fp; ~10x more data)
#
# Needs: perf (installed from Debian's linux-perf when missing),
# inferno-collapse-perf and inferno-flamegraph (`cargo install inferno`
# when missing). The trainer is built with `--profile profiling` (release
# code, full debug info) and frame pointers, so stacks are whole and frames
# have names; that build lives in target/profiling, apart from release.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE_DIR=${PROFILE_DIR:-target/profile}
FLAMEGRAPH=${FLAMEGRAPH:-$PROFILE_DIR/flamegraph.svg}
PERF_FREQ=${PERF_FREQ:-997}
CALL_GRAPH=${CALL_GRAPH:-fp}
say() { echo "profile.sh: $*" >&2; }

if [ $# -eq 0 ]; then
    set -- train --model seed-gap --epochs 2 --limit-train 5000 --limit-test 1000
fi
args=("$@")
if [[ "${args[0]}" == train || "${args[0]}" == compare ]] && [[ " ${args[*]} " != *" --out "* ]]; then
    rm -rf "$PROFILE_DIR/run"
    args+=(--out "$PROFILE_DIR/run")
fi
mkdir -p "$PROFILE_DIR" "$(dirname "$FLAMEGRAPH")"

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --- tools -----------------------------------------------------------------
if ! command -v perf >/dev/null 2>&1; then
    say "perf not found: installing Debian's linux-perf (apt-get update; apt-get install -y linux-perf)"
    sudo_if_needed apt-get update -qq
    sudo_if_needed apt-get install -y -qq linux-perf
fi
if ! command -v inferno-collapse-perf >/dev/null 2>&1 || ! command -v inferno-flamegraph >/dev/null 2>&1; then
    say "inferno not found: installing it with 'cargo install inferno --locked' (into ~/.cargo/bin)"
    cargo install inferno --locked
    export PATH="$HOME/.cargo/bin:$PATH"
fi

# --- which event -------------------------------------------------------------
# Virtual machines often expose no hardware counters: `cycles` is then
# "<not supported>" and only software events such as cpu-clock work.
if [ -z "${PERF_EVENT:-}" ]; then
    probe=$(perf stat -x, -e cycles -- true 2>&1 >/dev/null || true)
    if grep -q '^[0-9][0-9]*,' <<<"$probe"; then
        PERF_EVENT=cycles
    else
        PERF_EVENT=cpu-clock
        say "hardware counters not available (a virtual machine?): sampling the cpu-clock software event"
    fi
fi
paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo 2)
if [ "$(id -u)" -ne 0 ] && [ "$paranoid" -gt 1 ] && [[ "$PERF_EVENT" != *:* ]]; then
    say "kernel.perf_event_paranoid=$paranoid: sampling user space only ($PERF_EVENT:u);" \
        "'sudo sysctl kernel.perf_event_paranoid=1' to include the kernel"
    PERF_EVENT="$PERF_EVENT:u"
fi
case "$CALL_GRAPH" in
    fp) call_graph=fp ;;
    dwarf) call_graph=dwarf,16384 ;;
    *) say "CALL_GRAPH must be fp or dwarf, not '$CALL_GRAPH'"; exit 2 ;;
esac

# --- build -------------------------------------------------------------------
say "building the trainer (--profile profiling, frame pointers)"
RUSTFLAGS="${RUSTFLAGS:-} -C force-frame-pointers=yes" cargo build -q -p trainer --profile profiling
bin=target/profiling/trainer

# --- record ------------------------------------------------------------------
data="$PROFILE_DIR/perf.data"
say "perf record -F $PERF_FREQ -e $PERF_EVENT --call-graph $call_graph -- $bin ${args[*]}"
perf record -q -F "$PERF_FREQ" -e "$PERF_EVENT" --call-graph "$call_graph" -o "$data" -- "$bin" "${args[@]}"

# --- flamegraph ----------------------------------------------------------------
folded="$PROFILE_DIR/stacks.folded"
perf script -i "$data" 2>/dev/null | inferno-collapse-perf >"$folded"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then commit="$commit + local changes"; fi
title="gapnet: trainer ${args[*]} ($PERF_EVENT, $PERF_FREQ Hz, $(nproc) CPUs, commit $commit)"
title=${title//"$PROFILE_DIR/run"/<tmp>}
# A sample's weight is its event period: nanoseconds for cpu-clock.
case "$PERF_EVENT" in
    cpu-clock* | task-clock*) unit=ns ;;
    cycles*) unit=cycles ;;
    *) unit=events ;;
esac
inferno-flamegraph --title "$title" --countname "$unit" <"$folded" >"$FLAMEGRAPH"

# --- hottest functions ---------------------------------------------------------
# From the folded stacks: self time (the leaf frame) and total time (every
# frame on the stack, once per stack) as a share of all sampled time; the
# total-time list shows only the project's and matrixmultiply's functions.
report() {
    awk -v mode="$1" '
        { n = $NF; sub(/ [0-9]+$/, ""); k = split($0, f, ";"); total += n
          if (mode == "self") { c[f[k]] += n }
          else { delete seen
                 for (i = 1; i <= k; i++)
                     if (f[i] ~ /^<?(kernel|graph|trainer|matrixmultiply)::/ && !(f[i] in seen)) {
                         seen[f[i]] = 1; c[f[i]] += n } } }
        END { for (s in c) printf "%6.2f%%  %s\n", 100 * c[s] / total, s }' "$folded" | sort -rn | head -"$2"
}
echo
echo "Hottest functions by self time (share of the samples):"
report self 12
echo
echo "The project's functions by total time (including callees):"
report total 15
echo
say "flamegraph: $FLAMEGRAPH"
say "perf data:  $data (perf report -i $data --no-children)"
