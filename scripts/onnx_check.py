#!/usr/bin/env python3
"""Run a model exported by `trainer export` in onnxruntime on CIFAR records.

    python scripts/onnx_check.py MODEL.onnx DATA [--count N] [--first I] [--show N]
        [--checkpoint MODEL.safetensors [--trainer CMD]] [--npy FILE] [--save FILE]

DATA is a CIFAR-10 binary file (test.bin, test_batch.bin, ...) or a folder
holding test.bin or test_batch.bin. The script feeds the file exactly what
its documentation asks for, pixel values / 255 as float32 N x C x H x W, and
prints each record's probabilities with the class names stored in the
model, and the accuracy on the records. Then, if asked, it compares them:

- --checkpoint: with gapnet's own, from `trainer predict --json` on the same
  records saved as PNG files (lossless, so the same pixels); `--trainer`
  names the trainer command (default: target/release/trainer when it
  exists, else `trainer` on the PATH);
- --npy: with an array of probabilities saved by numpy, N x classes.

It exits with status 1 if any probability differs by more than 1e-5.
Needs numpy and onnxruntime (`pip install onnxruntime numpy`).
"""

import argparse
import json
import os
import shlex
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import onnxruntime as ort

TOLERANCE = 1e-5


def find_records(data):
    """The CIFAR binary file DATA names, and the label names beside it."""
    path = data
    if os.path.isdir(data):
        for name in ("test.bin", "test_batch.bin"):
            if os.path.isfile(os.path.join(data, name)):
                path = os.path.join(data, name)
                break
        else:
            sys.exit(f"error: {data}: no test.bin or test_batch.bin in this folder")
    meta = os.path.join(os.path.dirname(path), "batches.meta.txt")
    names = None
    if os.path.isfile(meta):
        with open(meta) as f:
            names = [line.strip() for line in f if line.strip()]
    return path, names


def read_records(path, chw, first, count):
    """Labels and images (uint8, count x C x H x W) of records first.. of path."""
    size = 1 + int(np.prod(chw))
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % size:
        sys.exit(f"error: {path}: {raw.size} bytes is not a whole number of {size}-byte records")
    records = raw.reshape(-1, size)[first : first + count]
    if len(records) == 0:
        sys.exit(f"error: {path}: no record at {first}")
    return records[:, 0], records[:, 1:].reshape((-1, *chw))


def png(path, chw):
    """Write a C x H x W uint8 image (1 or 3 channels) as a PNG file."""
    c, h, w = chw.shape
    pixels = np.ascontiguousarray(chw.transpose(1, 2, 0))
    rows = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    colour = 2 if c == 3 else 0
    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def gapnet_probabilities(trainer, checkpoint, images, classes):
    """gapnet's probabilities for images, from `trainer predict --json`."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, image in enumerate(images):
            paths.append(os.path.join(tmp, f"record{i:05d}.png"))
            png(paths[-1], image)
        command = shlex.split(trainer) + ["predict", "--json", "--checkpoint", checkpoint] + paths
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"error: {' '.join(command[:4])} ... failed:\n{done.stderr}")
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return np.array([[line["probabilities"][c] for c in classes] for line in lines], dtype=np.float64)


def default_trainer():
    here = os.path.dirname(os.path.abspath(__file__))
    built = os.path.join(here, "..", "target", "release", "trainer")
    return built if os.path.isfile(built) else "trainer"


def compare(name, got, want):
    if want.shape != got.shape:
        sys.exit(f"error: {name} holds {want.shape} probabilities, onnxruntime gave {got.shape}")
    worst = float(np.abs(want - got).max())
    verdict = "ok" if worst <= TOLERANCE else "FAILED"
    print(f"largest difference from {name}: {worst:.2e} ({verdict}: tolerance {TOLERANCE:g})")
    return worst <= TOLERANCE


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="the .onnx file written by trainer export")
    parser.add_argument("data", help="a CIFAR-10 binary file, or a folder with test.bin or test_batch.bin")
    parser.add_argument("--count", type=int, default=8, help="records to run (default 8)")
    parser.add_argument("--first", type=int, default=0, help="the first record (default 0)")
    parser.add_argument("--show", type=int, default=20, help="records to print one by one (default 20)")
    parser.add_argument("--checkpoint", help="compare with gapnet's trainer predict on this checkpoint")
    parser.add_argument("--trainer", default=default_trainer(), help="the trainer command for --checkpoint")
    parser.add_argument("--npy", help="compare with the probabilities in this .npy file")
    parser.add_argument("--save", help="save onnxruntime's probabilities to this .npy file")
    args = parser.parse_args()

    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    classes = json.loads(meta["classes"])
    model_input = session.get_inputs()[0]
    chw = tuple(model_input.shape[1:])
    print(
        f"{args.model}: {meta.get('model', '?')} from gapnet {meta.get('gapnet_version', '?')}, "
        f"input {model_input.name} {model_input.shape}, classes {classes}; onnxruntime {ort.__version__}"
    )

    path, names = find_records(args.data)
    labels, images = read_records(path, chw, args.first, args.count)
    # As the engine scales them: float32 division of each byte by 255.
    x = images.astype(np.float32) / np.float32(255.0)
    probs = session.run(["probabilities"], {model_input.name: x})[0]
    truths = [names[label] if names and label < len(names) else f"label {label}" for label in labels]
    for i, (truth, p) in enumerate(zip(truths, probs)):
        if i == args.show:
            print(f"... ({len(probs) - i} more records)")
            break
        best = int(np.argmax(p))
        others = ", ".join(f"{c} {v:.4f}" for c, v in zip(classes, p))
        print(f"record {args.first + i} (true {truth}): {classes[best]} {p[best]:.4f}  ({others})")
    # Records of the model's classes (the two-class copy holds only those).
    known = [(t, p) for t, p in zip(truths, probs) if t in classes]
    if known:
        right = sum(classes[int(np.argmax(p))] == t for t, p in known)
        print(f"accuracy on the {len(known)} records of the model's classes: {right / len(known):.4f} ({right}/{len(known)})")

    ok = True
    if args.save:
        np.save(args.save, probs)
        print(f"saved {args.save}")
    if args.npy:
        ok &= compare(args.npy, probs.astype(np.float64), np.load(args.npy).astype(np.float64))
    if args.checkpoint:
        want = gapnet_probabilities(args.trainer, args.checkpoint, images, classes)
        ok &= compare("gapnet's trainer predict", probs.astype(np.float64), want)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
