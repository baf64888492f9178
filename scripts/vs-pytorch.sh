#!/usr/bin/env bash
# vs-pytorch.sh: gapnet's training speed side by side with PyTorch's on the
# CPU, same networks (seed-fc and seed-gap, checked layer by layer and
# parameter by parameter), batch 64, same thread count, in images/s.
#
# Usage: scripts/vs-pytorch.sh [--data DIR] [--rounds N] [--quick]
#                              [--steps N] [--threads N]
#
#   --data DIR   the CIFAR-10 folder the trainer reads (default: $CIFAR10_DIR;
#                one of the two is required)
#   --rounds N   interleaved rounds (default 5): each round runs every variant
#                once, so slow drifts of a noisy machine hit all of them alike
#   --steps N    PyTorch's timed steps per measurement (default 100, after 10
#                warm-up steps)
#   --threads N  threads for both (default 2)
#   --quick      a smoke test of the script, not a measurement: 1 round,
#                PyTorch 3 + 10 steps, gapnet on 640 training images
#                (--limit-train 640: its first, slower batches weigh more)
#   -h, --help   this text
#
# What is measured, per preset, each round:
#   gapnet   one epoch of `target/release/trainer train --epochs 1 --batch 64
#            --threads N --no-augment` at every kernel set the CPU runs
#            (GAPNET_ISA=avx512 if /proc/cpuinfo has avx512f, avx2 with
#            avx2+fma, portable always); images/s from the run's metrics.csv
#            (training loop only, batch preparation included; the run folder
#            under target/vs-pytorch/runs is deleted afterwards)
#   PyTorch  the same network as a torch.nn.Sequential, CrossEntropyLoss, SGD
#            momentum 0.9 (weight decay 5e-4, as the modern recipe),
#            zero_grad/forward/loss/backward/step on one fixed random batch,
#            torch.set_num_threads(N): eager NCHW, eager channels_last, and
#            torch.compile of the whole step (skipped, saying why, if it does
#            not compile); and, on an AVX-512 CPU, all three again "held to
#            AVX2" (ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2) to set
#            against gapnet's AVX2 kernels
# It prints the CPU, then one Markdown table per preset: median images/s of
# each variant, and the median of the per-round ratios gapnet / PyTorch's best
# variant (and gapnet AVX2 / PyTorch held to AVX2). The same text and the raw
# per-round numbers are saved in target/vs-pytorch/results-*.md, rounds-*.json.
#
# Installs (once; later runs reuse it): PyTorch CPU in a virtual environment,
# target/vs-pytorch/venv (git-ignored; nothing global), from PyPI alone.
# PyPI's Linux torch wheel is a CUDA build linked against several GB of nvidia-*
# libraries. Instead: `pip install --no-deps torch==$TORCH_VERSION`, its pure
# Python dependencies (sympy, networkx, jinja2, ... as torch's metadata lists
# them) and numpy, the CUDA runtime (nvidia-cuda-runtime, 2 MB, so
# torch.cuda.is_available() answers False properly), and stub libraries for
# the rest (cuBLAS, cuDNN, NCCL, ...), built here with `cc`: torch loads them
# but a CPU run never calls them (a stub that is called aborts, naming
# itself). About 1.4 GB on disk, a 560 MB download. VS_PYTORCH_CUDA=full
# installs torch with all its CUDA dependencies instead (GBs more). To use
# the venv by hand:
#   LD_LIBRARY_PATH=target/vs-pytorch/venv/cuda-stubs target/vs-pytorch/venv/bin/python
# torch.compile's CPU code needs a C++ compiler (g++).
#
# Installed and tried with torch 2.15.0 (2.15.0+cu132), Python 3.11.
#
# Takes: the install, about a minute (the download) the first time. Then,
# on 2 cores with AVX2, a round is ~10 s of gapnet epochs (2 presets x 2
# kernel sets) and ~20 s of PyTorch (2 presets x 3 variants x 110 steps),
# so 2 to 3 minutes with the defaults; on an AVX-512 CPU (one more kernel
# set, PyTorch twice) about 5. torch.compile's first compilation takes
# ~15 s and is cached in target/vs-pytorch/inductor-cache. --quick: ~20 s.
# Run it on a quiet machine: each round says so when the CPUs were busy with
# something else, and PyTorch's OpenMP threads slow down far more than
# gapnet's when they share the cores.
set -euo pipefail

TORCH_VERSION=${TORCH_VERSION:-2.15.0}
VS_PYTORCH_CUDA=${VS_PYTORCH_CUDA:-stubs}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$root/target/vs-pytorch
venv=$work/venv
stubs=$venv/cuda-stubs
trainer=$root/target/release/trainer
helper=$root/scripts/vs_pytorch.py

die() {
  echo "vs-pytorch.sh: error: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

data=${CIFAR10_DIR:-}
rounds='' steps='' threads=2 quick=0
while (($#)); do
  case $1 in
    --data) [[ $# -ge 2 ]] || die "--data needs a folder"; data=$2; shift 2 ;;
    --data=*) data=${1#*=}; shift ;;
    --rounds) [[ $# -ge 2 ]] || die "--rounds needs a number"; rounds=$2; shift 2 ;;
    --rounds=*) rounds=${1#*=}; shift ;;
    --steps) [[ $# -ge 2 ]] || die "--steps needs a number"; steps=$2; shift 2 ;;
    --steps=*) steps=${1#*=}; shift ;;
    --threads) [[ $# -ge 2 ]] || die "--threads needs a number"; threads=$2; shift 2 ;;
    --threads=*) threads=${1#*=}; shift ;;
    --quick) quick=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
for n in "$rounds" "$steps" "$threads"; do
  [[ -z $n || $n =~ ^[1-9][0-9]*$ ]] || die "'$n' is not a positive whole number"
done
if ((quick)); then
  rounds=${rounds:-1} steps=${steps:-10} warmup=3 limit_train=640
else
  rounds=${rounds:-5} steps=${steps:-100} warmup=10 limit_train=0
fi

[[ -n $data ]] || die "no data folder: give --data DIR or set CIFAR10_DIR (the CIFAR-10 folder the trainer reads)"
[[ -d $data ]] || die "data folder '$data' does not exist"
data=$(cd "$data" && pwd)
[[ -x $trainer ]] || die "$trainer not found: build it first (cargo build --release -p trainer)"
[[ -r /proc/cpuinfo ]] || die "/proc/cpuinfo is not readable: this script is for Linux"

# PyTorch in target/vs-pytorch/venv, once. vs-pytorch.ready is written last:
# without it (a first or an interrupted install) the steps run again, and pip
# skips what is already there.
setup_venv() {
  local ready=$venv/vs-pytorch.ready
  if [[ -f $ready && -x $venv/bin/python ]]; then
    echo "PyTorch: reusing $venv ($(cat "$ready"))" >&2
    return
  fi
  command -v python3 >/dev/null || die "python3 not found (needed for the PyTorch venv)"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "python3 is $(python3 -V 2>&1 | cut -d' ' -f2); torch $TORCH_VERSION needs Python 3.10 or later"
  if [[ $VS_PYTORCH_CUDA == stubs ]]; then
    command -v cc >/dev/null && command -v readelf >/dev/null ||
      die "building the CUDA stubs needs cc and readelf (apt-get install gcc binutils); or run with VS_PYTORCH_CUDA=full to install torch's CUDA libraries (several GB) instead"
  elif [[ $VS_PYTORCH_CUDA != full ]]; then
    die "VS_PYTORCH_CUDA is '$VS_PYTORCH_CUDA': stubs (the default) or full"
  fi
  echo "PyTorch: installing torch $TORCH_VERSION into $venv (a ~560 MB download, once)" >&2
  mkdir -p "$work"
  [[ -x $venv/bin/python ]] || python3 -m venv "$venv" || die "python3 -m venv failed (apt-get install python3-venv?)"
  local py=$venv/bin/python log=$work/install.log
  : >"$log"
  # pip's output goes to the log (it also says there that torch's CUDA
  # requirements are missing: on purpose); shown when pip fails
  pip_install() {
    "$py" -m pip install --disable-pip-version-check --no-cache-dir "$@" >>"$log" 2>&1 || {
      tail -n 30 "$log" >&2
      die "pip install $* failed (the whole log: $log)"
    }
  }
  if [[ $VS_PYTORCH_CUDA == full ]]; then
    pip_install "torch==$TORCH_VERSION" numpy
  else
    pip_install --no-deps "torch==$TORCH_VERSION"
    # torch's own list of requirements: the plain Python ones as they are,
    # the CUDA runtime out of cuda-toolkit's, no other nvidia-*/cuda-*/triton
    local reqs
    reqs=$("$py" - <<'EOF'
import re
from importlib.metadata import requires
for req in requires("torch") or []:
    spec, _, marker = req.partition(";")
    if "extra" in marker:
        continue
    name = re.match(r"[A-Za-z0-9._-]+", spec.strip()).group(0).lower()
    rest = re.sub(r"^[A-Za-z0-9._-]+(\[[^]]*\])?", "", spec.strip()).replace(" ", "")
    if name == "cuda-toolkit":
        print(f"cuda-toolkit[cudart]{rest}")
    elif name.startswith("nvidia-cuda-runtime"):
        print(f"{name}{rest}")
    elif not name.startswith(("nvidia-", "cuda-", "triton")):
        print(f"{name}{rest}")
EOF
    )
    # shellcheck disable=SC2086 # one requirement a line, none with spaces
    pip_install $reqs numpy
    rm -rf "$stubs"
    "$py" "$helper" cuda-stubs "$stubs" >&2 || die "building the CUDA stub libraries failed"
  fi
  LD_LIBRARY_PATH=$stubs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} OMP_NUM_THREADS=2 "$py" "$helper" check >&2 ||
    die "torch does not work in $venv (delete the folder to install again)"
  local version
  version=$(LD_LIBRARY_PATH=$stubs "$py" -c 'import torch; print(torch.__version__)' 2>/dev/null)
  echo "torch $version, CUDA $VS_PYTORCH_CUDA, installed $(date -u +%Y-%m-%d)" >"$ready"
  echo "PyTorch: installed torch $version ($(du -sh "$venv" | cut -f1) in $venv)" >&2
}

setup_venv
args=(--trainer "$trainer" --data "$data" --work "$work" --rounds "$rounds" --threads "$threads"
  --warmup "$warmup" --steps "$steps" --limit-train "$limit_train")
[[ -d $stubs ]] && args+=(--cuda-stubs "$stubs")
exec "$venv/bin/python" "$helper" run "${args[@]}"
