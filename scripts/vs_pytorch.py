#!/usr/bin/env python3
"""The Python half of scripts/vs-pytorch.sh: gapnet against PyTorch, same
network, same batch, same threads, training images per second.

Subcommands (the shell script calls them; run it, not this file):

  cuda-stubs DIR  Build do-nothing stand-ins for the CUDA libraries that
                  PyPI's (CUDA) torch wheel is linked against but that a CPU
                  run never calls, so torch imports without the ~3 GB of
                  nvidia-* packages. Each stub function aborts with a message
                  if it is ever called. Needs `cc` and `readelf`.
  check           Import torch and take a few CPU training steps.
  worker          A PyTorch benchmark process: JSON requests on stdin, one
                  JSON answer per line on stdout. Models (and compiled steps)
                  stay warm between requests.
  run             The measurement: rounds of every variant, then the tables.

Only `run` and `cuda-stubs` are meant for the shell script; `check` and
`worker` import torch, so they need the venv (and the stubs on
LD_LIBRARY_PATH when they are used).
"""

import argparse
import csv
import glob
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict

BATCH = 64
CLASSES = 2
INPUT = (3, 32, 32)
# The modern recipe's optimiser (see `trainer train --help`): SGD with
# momentum 0.9 and weight decay 5e-4. The lr does not change the speed;
# ours uses 0.01 for FC heads and 0.05 for GAP heads.
LR = {"seed-fc": 0.01, "seed-gap": 0.05}
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4


# ---------------------------------------------------------------------------
# The networks, as crates/graph/src/spec.rs `preset` defines them (the same
# layer lists as the `spec` in a run's config.json, which `run` checks).


def conv(filters):
    return {"type": "conv", "filters": filters, "size": 3, "stride": 1, "pad": 1, "bias": True}


def dense(units):
    return {"type": "dense", "units": units, "bias": True}


RELU = {"type": "relu"}
# ceil mode: 32 -> 16 -> 8, as PyTorch's ceil_mode=True
POOL = {"type": "max_pool", "size": 3, "stride": 2, "ceil": True}
TRUNK = [conv(20), RELU, POOL, conv(20), RELU, POOL, conv(20), RELU]
PRESETS = {
    "seed-fc": TRUNK + [{"type": "flatten"}, dense(120), RELU, dense(84), RELU, dense(CLASSES)],
    "seed-gap": TRUNK + [{"type": "global_avg_pool"}, dense(CLASSES)],
}


def torch_model(layers):
    """The spec as a torch.nn.Sequential whose parameter names are ours
    (conv1.weight, ..., fc1.weight, ...), so the shapes compare by name."""
    import torch.nn as nn

    mods = OrderedDict()
    c, h, w = INPUT
    flat = None  # features once flattened
    count = {}

    def name(kind):
        count[kind] = count.get(kind, 0) + 1
        return f"{kind}{count[kind]}"

    for layer in layers:
        t = layer["type"]
        if t == "conv":
            k, s, p = layer["size"], layer["stride"], layer["pad"]
            mods[name("conv")] = nn.Conv2d(c, layer["filters"], k, stride=s, padding=p, bias=layer["bias"])
            c, h, w = layer["filters"], (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        elif t == "relu":
            mods[name("relu")] = nn.ReLU()
        elif t == "max_pool":
            k, s, ceil = layer["size"], layer["stride"], layer["ceil"]
            mods[name("pool")] = nn.MaxPool2d(k, s, ceil_mode=ceil)
            out = (lambda n: -(-(n - k) // s) + 1) if ceil else (lambda n: (n - k) // s + 1)
            h, w = out(h), out(w)
        elif t == "global_avg_pool":
            mods["gap"] = nn.AdaptiveAvgPool2d(1)
            mods["flatten"] = nn.Flatten()
            flat = c
        elif t == "flatten":
            mods["flatten"] = nn.Flatten()
            flat = c * h * w
        elif t == "dense":
            mods[name("fc")] = nn.Linear(flat, layer["units"], bias=layer["bias"])
            flat = layer["units"]
        else:
            raise ValueError(f"layer type {t!r} has no PyTorch translation here")
    return nn.Sequential(mods)


# ---------------------------------------------------------------------------
# cuda-stubs


def readelf(*args):
    return subprocess.run(["readelf", "-W", *args], check=True, capture_output=True, text=True).stdout


def cuda_stubs(out):
    """Stub libraries for every library torch/lib/*.so needs that is not on
    this machine (but libcuda.so.1, the driver, which only the lazily loaded
    NVRTC helper needs: the real CUDA runtime must keep finding no driver).
    Each defines, under the right symbol versions, every symbol torch takes
    from that library, so torch loads with RTLD_NOW."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("vs_pytorch.py cuda-stubs: torch is not installed in this Python")
    torch_lib = os.path.join(spec.submodule_search_locations[0], "lib")
    site = os.path.dirname(os.path.dirname(torch_lib))
    libs = sorted(glob.glob(os.path.join(torch_lib, "*.so*")))

    needed, version_file, undefined, defined = set(), {}, {}, set()
    for lib in libs:
        needed |= set(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", readelf("-d", lib)))
        current = None
        for line in readelf("-V", lib).splitlines():
            if m := re.search(r"File: (\S+)", line):
                current = m.group(1)
            elif (m := re.search(r"Name: (\S+)", line)) and current:
                version_file[m.group(1)] = current
        for line in readelf("--dyn-syms", lib).splitlines():
            f = line.split()
            if len(f) < 8 or not f[0].endswith(":"):
                continue
            kind, bind, index, symbol = f[3], f[4], f[6], f[7]
            base, _, version = symbol.partition("@")
            if index != "UND":
                defined.add(base)
            elif bind != "WEAK" and base:
                undefined[(base, version)] = kind

    present = {os.path.basename(p) for p in libs}
    present |= {os.path.basename(p) for p in glob.glob(os.path.join(site, "nvidia", "*", "lib", "*.so*"))}
    ldconfig = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    present |= set(re.findall(r"^\s+(\S+) \(", ldconfig, re.M))
    missing = sorted(needed - present - {"libcuda.so.1"})
    if not missing:
        print("cuda-stubs: torch finds every library it needs; no stubs")
        return

    # Versioned references name their library; the others (NCCL, cuFile,
    # cuSPARSELt export no versions) go by their prefix: ncclSend -> libnccl.
    stems = {so: so[3:].split(".so")[0].lower() for so in missing}
    symbols = {so: {} for so in missing}  # soname -> version ("" none) -> [(name, kind)]
    for (base, version), kind in sorted(undefined.items()):
        if version:
            so = version_file.get(version)
            if so in symbols:
                symbols[so].setdefault(version, []).append((base, kind))
        elif base not in defined:
            hits = [so for so, stem in stems.items() if base.lower().startswith(stem)]
            if hits:
                so = max(hits, key=lambda so: len(stems[so]))
                symbols[so].setdefault("", []).append((base, kind))

    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for so, groups in symbols.items():
            lines = [
                "#include <stdio.h>",
                "#include <stdlib.h>",
                "static void stub(const char *f) {",
                f'    fprintf(stderr, "vs-pytorch: %s (CUDA, {so}) was called, but this PyTorch has only '
                f'stubs of its CUDA libraries: it runs on the CPU alone\\n", f);',
                "    abort();",
                "}",
            ]
            for entries in groups.values():
                for sym, kind in entries:
                    lines.append(f"char {sym}[64];" if kind == "OBJECT" else f'void {sym}(void) {{ stub("{sym}"); }}')
            src = os.path.join(tmp, so + ".c")
            with open(src, "w") as f:
                f.write("\n".join(lines) + "\n")
            script = os.path.join(tmp, so + ".map")
            with open(script, "w") as f:
                for version, entries in groups.items():
                    names = " ".join(sym + ";" for sym, _ in entries)
                    f.write(f"{version} {{ global: {names} }};\n" if version else f"{{ global: {names} }};\n")
            subprocess.run(
                ["cc", "-shared", "-fPIC", "-O1", "-o", os.path.join(out, so), f"-Wl,-soname,{so}",
                 f"-Wl,--version-script={script}", src],
                check=True,
            )
            print(f"cuda-stubs: {so}: {sum(len(e) for e in groups.values())} symbols")
    with open(os.path.join(out, "README.txt"), "w") as f:
        f.write(
            "Stand-ins, made by scripts/vs_pytorch.py cuda-stubs, for the CUDA libraries that PyPI's torch\n"
            "wheel links against: a CPU run loads but never calls them (each function aborts with a message\n"
            "if it is). Put this folder on LD_LIBRARY_PATH to import torch from this venv.\n"
        )


# ---------------------------------------------------------------------------
# check and worker (these import torch)


def check():
    import torch

    torch.set_num_threads(2)
    model = torch_model(PRESETS["seed-gap"])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    x, y = torch.randn(BATCH, *INPUT), torch.randint(0, CLASSES, (BATCH,))
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    if not all(map(lambda v: v == v, losses)) or losses[-1] >= losses[0]:
        sys.exit(f"check: the loss did not go down on a fixed batch: {losses}")
    print(f"torch {torch.__version__}: import and a CPU training step work (CUDA available: {torch.cuda.is_available()})")


class Bench:
    """One preset in one variant: the model, its optimiser, a fixed batch
    and the training step (eager or compiled)."""

    def __init__(self, torch, preset, variant):
        self.torch = torch
        torch.manual_seed(1)
        self.model = torch_model(PRESETS[preset])
        self.x = torch.randn(BATCH, *INPUT)
        self.y = torch.randint(0, CLASSES, (BATCH,))
        if variant == "channels_last":
            self.model = self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR[preset], momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        self.loss = torch.nn.CrossEntropyLoss()
        self.initial = [p.detach().clone() for p in self.model.parameters()]
        self.step = torch.compile(self.eager_step) if variant == "compile" else self.eager_step
        self.compile_s = None
        if variant == "compile":
            t = time.perf_counter()
            self.step()
            self.step()  # the optimiser's state now exists: a second graph
            self.compile_s = time.perf_counter() - t

    def eager_step(self):
        self.opt.zero_grad()
        loss = self.loss(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()

    def restore(self):
        """Start each measurement from the same weights and no momentum, in
        place (a compiled step sees the same tensors and does not
        recompile), so the loss is not driven to zero on the fixed batch
        over the rounds."""
        with self.torch.no_grad():
            for p, p0 in zip(self.model.parameters(), self.initial):
                p.copy_(p0)
                buf = self.opt.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    buf.zero_()

    def images_per_s(self, warmup, steps):
        self.restore()
        for _ in range(warmup):
            self.step()
        t = time.perf_counter()
        for _ in range(steps):
            self.step()
        return steps * BATCH / (time.perf_counter() - t)


def worker():
    # Answers go to the real stdout; anything else printed (by torch too)
    # goes to stderr, so it cannot break the protocol.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    import torch

    threads = int(os.environ.get("OMP_NUM_THREADS", "2"))
    torch.set_num_threads(threads)
    benches, failed = {}, {}

    def answer(req):
        cmd = req["cmd"]
        if cmd == "info":
            return {
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "capability": torch.backends.cpu.get_cpu_capability(),
                "cuda": torch.cuda.is_available(),
            }
        if cmd == "shapes":
            model = torch_model(PRESETS[req["preset"]])
            return {"shapes": {k: list(v.shape) for k, v in model.state_dict().items()}}
        if cmd == "bench":
            key = (req["preset"], req["variant"])
            if key in failed:
                return {"skip": failed[key]}
            if key not in benches:
                try:
                    benches[key] = Bench(torch, *key)
                except Exception as e:  # torch.compile's errors are many and long
                    if req["variant"] != "compile":
                        raise
                    first = next((l for l in str(e).splitlines() if l.strip()), type(e).__name__)
                    failed[key] = f"{type(e).__name__}: {first[:300]}"
                    print(f"torch.compile failed for {key[0]}:\n{e}", file=sys.stderr)
                    return {"skip": failed[key]}
            b = benches[key]
            return {"images_per_s": b.images_per_s(req["warmup"], req["steps"]), "compile_s": b.compile_s}
        raise ValueError(f"unknown request {req!r}")

    for line in sys.stdin:
        req = json.loads(line)
        try:
            reply = answer(req)
        except Exception as e:
            import traceback

            traceback.print_exc()
            reply = {"error": f"{type(e).__name__}: {e}"}
        answers.write(json.dumps(reply) + "\n")


# ---------------------------------------------------------------------------
# run


class Worker:
    """A `worker` process under an environment of its own."""

    def __init__(self, label, env, log):
        self.label, self.log = label, log
        self.err = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, env=env, text=True, bufsize=1,
        )

    def ask(self, **req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            sys.exit(f"error: the PyTorch worker ({self.label}) stopped (exit {self.proc.returncode}); "
                     f"the end of its log, {self.log}:\n{tail(self.log)}")
        reply = json.loads(line)
        if "error" in reply:
            sys.exit(f"error: PyTorch ({self.label}) failed on {req}: {reply['error']}\n(log: {self.log})")
        return reply

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.err.close()


def tail(path, n=25):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


def cpu_info():
    model, flags = "unknown CPU", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    isas = []
    if "avx512f" in flags:
        isas.append("avx512")
    if {"avx2", "fma"} <= flags:
        isas.append("avx2")
    isas.append("portable")
    return model, isas


def busy(seconds=1.0):
    """The share of the CPUs' time that went to anything (this process is
    asleep) over `seconds`: another program busy beside the timing."""

    def times():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]  # idle, iowait
        return sum(v[:8]) - idle, sum(v[:8])

    b0, t0 = times()
    time.sleep(seconds)
    b1, t1 = times()
    return (b1 - b0) / max(t1 - t0, 1)


def safetensors_shapes(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return {k: v["shape"] for k, v in header.items()}


class Ours:
    def __init__(self, args):
        self.args = args
        self.runs = os.path.join(args.work, "runs")
        os.makedirs(self.runs, exist_ok=True)

    def train(self, preset, isa, tag, limit_train=None):
        """One epoch of `trainer train`; returns the run folder (the caller
        deletes it)."""
        a = self.args
        out = os.path.join(self.runs, f"{preset}-{isa}-{tag}-{os.getpid()}")
        shutil.rmtree(out, ignore_errors=True)
        cmd = [a.trainer, "train", "--model", preset, "--epochs", "1", "--batch", str(BATCH),
               "--threads", str(a.threads), "--no-augment", "--no-download", "--data", a.data,
               "--limit-test", str(BATCH), "--out", out]
        limit = limit_train or a.limit_train
        if limit:
            cmd += ["--limit-train", str(limit)]
        env = dict(os.environ, GAPNET_ISA=isa)
        env.pop("GAPNET_PORTABLE", None)
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        except BaseException:  # Ctrl-C: no run folder left behind
            shutil.rmtree(out, ignore_errors=True)
            raise
        if p.returncode != 0:
            shutil.rmtree(out, ignore_errors=True)
            sys.exit(f"error: {' '.join(cmd)} (GAPNET_ISA={isa}) failed (exit {p.returncode}):\n"
                     f"{p.stdout[-2000:]}{p.stderr[-2000:]}")
        with open(os.path.join(out, "config.json")) as f:
            if json.load(f).get("isa") != isa:
                sys.exit(f"error: asked the trainer for {isa} kernels, but {out}/config.json names others")
        return out

    def images_per_s(self, preset, isa, tag):
        out = self.train(preset, isa, tag)
        try:
            with open(os.path.join(out, "metrics.csv")) as f:
                rows = list(csv.DictReader(f))
            return float(rows[-1]["images_per_s"])
        finally:
            shutil.rmtree(out, ignore_errors=True)


VARIANTS = ["eager", "channels_last", "compile"]
VARIANT_NAMES = {"eager": "eager (NCHW)", "channels_last": "eager, channels_last", "compile": "torch.compile"}


def run(args):
    model_name, isas = cpu_info()
    presets = ["seed-fc", "seed-gap"]
    held_needed = "avx512" in isas  # on an AVX2-only CPU PyTorch is already held to AVX2
    os.makedirs(args.work, exist_ok=True)

    base_env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
                    TORCHINDUCTOR_CACHE_DIR=os.path.join(args.work, "inductor-cache"),
                    TORCHINDUCTOR_COMPILE_THREADS="1")  # no pool of compile processes beside the timing
    for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        base_env.pop(k, None)
    if args.cuda_stubs:
        base_env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [args.cuda_stubs, os.environ.get("LD_LIBRARY_PATH")]))
    pythons = {"pytorch": Worker("as it comes", base_env, os.path.join(args.work, "worker.log"))}
    if held_needed:
        held = dict(base_env, ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
        pythons["pytorch-avx2"] = Worker("held to AVX2", held, os.path.join(args.work, "worker-avx2.log"))
    ours = Ours(args)
    try:
        info = pythons["pytorch"].ask(cmd="info")
        trainer_version = subprocess.run([args.trainer, "--version"], capture_output=True, text=True).stdout.strip()
        header = [
            f"# gapnet vs PyTorch: training images/s, {args.rounds} interleaved round(s)",
            "",
            f"- CPU: {model_name}, {os.cpu_count()} logical cores; gapnet kernels run: {', '.join(isas)}",
            f"- threads: {args.threads} (gapnet --threads, torch.set_num_threads, OMP_NUM_THREADS)",
            f"- gapnet: {trainer_version}, one epoch of `trainer train` ({args.limit_train or 'all'} training images, "
            f"--no-augment), images/s from metrics.csv (batch preparation included)",
            f"- PyTorch: {info['torch']} (CPU capability {info['capability']}), {args.warmup} warm-up + "
            f"{args.steps} timed steps on one fixed random batch",
            f"- both: batch {BATCH}, cross-entropy, SGD momentum {MOMENTUM} weight decay {WEIGHT_DECAY}",
        ]
        if not held_needed:
            header.append("- no AVX-512 on this CPU: PyTorch as it comes is already held to AVX2 (not run twice)")
        print("\n".join(header), flush=True)

        # The networks are the same: the preset's layers (config.json) and
        # the parameter shapes (model.safetensors) of a tiny run of ours.
        for preset in presets:
            out = ours.train(preset, isas[-1], "check", limit_train=BATCH)
            try:
                with open(os.path.join(out, "config.json")) as f:
                    spec = json.load(f)["spec"]["layers"]
                theirs = safetensors_shapes(os.path.join(out, "model.safetensors"))
            finally:
                shutil.rmtree(out, ignore_errors=True)
            if spec != PRESETS[preset]:
                sys.exit(f"error: {preset} is not the network vs_pytorch.py builds:\n  trainer: {spec}\n"
                         f"  here:    {PRESETS[preset]}\n(update PRESETS in {__file__})")
            mine = pythons["pytorch"].ask(cmd="shapes", preset=preset)["shapes"]
            if mine != theirs:
                sys.exit(f"error: {preset}: PyTorch parameters {mine} differ from the trainer's {theirs}")
            count = sum(prod(s) for s in mine.values())
            header.append(f"- {preset}: {count:,} parameters in both ({len(mine)} tensors, same shapes)")
            print(header[-1], flush=True)
        print(flush=True)

        # results[preset][variant] = [images/s of each round]
        results = {p: {} for p in presets}
        notes = []
        started = time.perf_counter()
        for r in range(args.rounds):
            load = busy()
            if load > 0.1:
                note = f"round {r + 1}: the CPUs were {100 * load:.0f}% busy with something else just before it: noisy"
                notes.append(note)
                print(f"  warning: {note}", file=sys.stderr, flush=True)
            jobs = []
            for preset in presets:
                jobs += [(preset, "ours", isa) for isa in isas]
                for py in pythons:
                    jobs += [(preset, py, v) for v in VARIANTS]
            if r % 2:  # every other round backwards: no variant always comes first
                jobs.reverse()
            for preset, who, what in jobs:
                if who == "ours":
                    key, value = f"gapnet {what}", ours.images_per_s(preset, what, f"r{r + 1}")
                else:
                    key = f"{who} {what}"
                    reply = pythons[who].ask(cmd="bench", preset=preset, variant=what,
                                             warmup=args.warmup, steps=args.steps)
                    if "skip" in reply:
                        note = f"{label(key)} ({preset}) skipped: {reply['skip']}"
                        if note not in notes:
                            notes.append(note)
                            print(f"  {note}", file=sys.stderr, flush=True)
                        continue
                    value = reply["images_per_s"]
                    if reply.get("compile_s") and r == 0:
                        notes.append(f"{label(key)} ({preset}): compiled in {reply['compile_s']:.1f} s "
                                     f"(its first two steps; target/vs-pytorch/inductor-cache may have had it)")
                results[preset].setdefault(key, []).append(value)
                print(f"  round {r + 1}, {preset}, {label(key)}: {value:,.0f} images/s", file=sys.stderr, flush=True)
            print(f"  round {r + 1}/{args.rounds} done ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr, flush=True)

        body = tables(results, isas, held_needed)
        if notes:
            body += "\nNotes:\n" + "".join(f"- {n}\n" for n in notes)
        print("\n" + body, end="")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        saved = os.path.join(args.work, f"results-{stamp}.md")
        with open(saved, "w") as f:
            f.write("\n".join(header) + "\n\n" + body)
        with open(os.path.join(args.work, f"rounds-{stamp}.json"), "w") as f:
            json.dump(results, f, indent=1)
        print(f"\n(saved in {saved}, and each round's numbers in rounds-{stamp}.json beside it)")
    finally:
        for w in pythons.values():
            w.close()


def prod(xs):
    n = 1
    for x in xs:
        n *= x
    return n


def label(key):
    who, what = key.split(" ", 1)
    if who == "gapnet":
        return f"gapnet, {what} kernels"
    held = " held to AVX2" if who == "pytorch-avx2" else ""
    return f"PyTorch{held}, {VARIANT_NAMES[what]}"


def tables(results, isas, held_needed):
    out = []
    for preset, rows in results.items():
        med = {k: statistics.median(v) for k, v in rows.items()}

        def best(who):
            keys = [k for k in med if k.split(" ", 1)[0] == who]
            return max(keys, key=med.get) if keys else None

        out.append(f"## {preset}\n")
        out.append("| variant | images/s (median) | range over rounds |")
        out.append("| --- | ---: | ---: |")
        for k, v in rows.items():
            out.append(f"| {label(k)} | {med[k]:,.0f} | {min(v):,.0f} – {max(v):,.0f} |")
        out.append("")
        out.append("| ratio (median of the per-round ratios) | gapnet / PyTorch |")
        out.append("| --- | ---: |")
        top = best("pytorch")
        held = best("pytorch-avx2") if held_needed else top
        pairs = [(f"gapnet {isa}", top, "PyTorch as it comes, best") for isa in isas]
        if "avx2" in isas:
            here = "" if held_needed else " (here the same: no AVX-512)"
            pairs.append(("gapnet avx2", held, f"PyTorch held to AVX2{here}, best"))
        for mine, theirs, what in pairs:
            if theirs is None or mine not in rows:
                continue
            ratios = [a / b for a, b in zip(rows[mine], rows[theirs])]
            variant = VARIANT_NAMES[theirs.split(" ", 1)[1]]
            out.append(f"| {label(mine)} / {what}: {variant} | {statistics.median(ratios):.2f}x |")
        out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("cuda-stubs")
    s.add_argument("dir")
    sub.add_parser("check")
    sub.add_parser("worker")
    r = sub.add_parser("run")
    r.add_argument("--trainer", required=True)
    r.add_argument("--data", required=True)
    r.add_argument("--work", required=True, help="target/vs-pytorch: runs, logs, results")
    r.add_argument("--cuda-stubs", default="", help="folder of stub libraries to put on LD_LIBRARY_PATH")
    r.add_argument("--rounds", type=int, default=5)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--warmup", type=int, default=10)
    r.add_argument("--steps", type=int, default=100)
    r.add_argument("--limit-train", type=int, default=0)
    args = p.parse_args()
    if args.cmd == "cuda-stubs":
        cuda_stubs(args.dir)
    elif args.cmd == "check":
        check()
    elif args.cmd == "worker":
        worker()
    else:
        run(args)


if __name__ == "__main__":
    main()
