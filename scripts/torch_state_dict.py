"""Load a gapnet checkpoint into the equivalent torch.nn module with
load_state_dict(strict=True) and evaluate it on CIFAR-10 binary records.

    python scripts/torch_state_dict.py runs/<run>/model.safetensors <folder with test_batch.bin or test.bin>

The module is built from the model spec in the file's header, its modules
named as gapnet names its tensors (conv1, bn1, fc1, ...), so the state dict
(weights, biases, batch norms' running statistics and i64
num_batches_tracked) must load as it is. Prints the accuracy of the module
in eval mode (batch norms on their running statistics): it should equal
`trainer eval --checkpoint <same file>`. Needs torch and numpy only
(scripts/vs-pytorch.sh builds such a venv in target/vs-pytorch/venv).
"""
import json
import pathlib
import struct
import sys
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

DTYPES = {"F32": torch.float32, "I64": torch.int64}


def read_safetensors(path):
    raw = pathlib.Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    meta = json.loads(header.pop("__metadata__")["gapnet"])
    body = raw[8 + n :]
    tensors = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        v = torch.frombuffer(bytearray(body[a:b]), dtype=DTYPES[t["dtype"]])
        tensors[name] = v.reshape(t["shape"])
    return tensors, meta


def module(spec, channels):
    layers, count, flat = OrderedDict(), {}, False

    def name(stem):
        count[stem] = count.get(stem, 0) + 1
        return f"{stem}{count[stem]}"

    for i, layer in enumerate(spec["layers"]):
        kind = layer["type"]
        if kind == "conv":
            conv = nn.Conv2d(channels, layer["filters"], layer["size"], layer["stride"], layer["pad"], bias=layer["bias"])
            layers[name("conv")] = conv
            channels = layer["filters"]
        elif kind == "batch_norm":
            bn = (nn.BatchNorm1d if flat else nn.BatchNorm2d)(channels, eps=layer["eps"], momentum=layer["momentum"])
            layers[name("bn")] = bn
        elif kind == "relu":
            layers[f"relu_{i}"] = nn.ReLU()
        elif kind == "max_pool":
            layers[f"pool_{i}"] = nn.MaxPool2d(layer["size"], layer["stride"], ceil_mode=layer["ceil"])
        elif kind == "global_avg_pool":
            layers[f"gap_{i}"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            flat = True
        elif kind == "flatten":
            layers[f"flatten_{i}"] = nn.Flatten()
            flat = True
        elif kind == "dense":
            layers[name("fc")] = nn.LazyLinear(layer["units"], bias=layer["bias"])
            channels = layer["units"]
        else:
            sys.exit(f"unknown layer type {kind}")
    return nn.Sequential(layers)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    tensors, meta = read_safetensors(sys.argv[1])
    spec, (c, h, w) = json.loads(meta["spec"]), json.loads(meta["input"])
    model = module(spec, c)
    model(torch.zeros(2, c, h, w))  # sizes the lazy linear layers
    model.load_state_dict(tensors, strict=True)
    model.eval()
    folder = pathlib.Path(sys.argv[2])
    path = next(p for p in [folder / "test_batch.bin", folder / "test.bin"] if p.exists())
    records = np.frombuffer(path.read_bytes(), dtype=np.uint8).reshape(-1, 1 + c * h * w)
    labels = records[:, 0]
    x = torch.from_numpy(records[:, 1:].astype(np.float32).reshape(-1, c, h, w) / 255.0)
    if "norm_mean" in meta:
        mean = torch.tensor(json.loads(meta["norm_mean"])).reshape(1, c, 1, 1)
        std = torch.tensor(json.loads(meta["norm_std"])).reshape(1, c, 1, 1)
        x = (x - mean) / std
    with torch.no_grad():
        predicted = model(x).argmax(1).numpy()
    # CIFAR-10 labels name classes through batches.meta.txt; the model's
    # classes are in its header. Other records are skipped, as gapnet does.
    names = (folder / "batches.meta.txt").read_text().split()
    classes = json.loads(meta["classes"])
    target = np.array([classes.index(names[l]) if names[l] in classes else -1 for l in labels])
    keep = target >= 0
    correct = int((predicted[keep] == target[keep]).sum())
    print(f"strict load_state_dict: ok ({len(tensors)} tensors); torch {torch.__version__}")
    print(f"test accuracy {correct / keep.sum():.4f} ({correct}/{keep.sum()} images)")


if __name__ == "__main__":
    main()
