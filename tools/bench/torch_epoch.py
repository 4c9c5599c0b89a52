#!/usr/bin/env python3
"""PyTorch's time for what kiln-train does, for comparison (tools/bench/compare-epoch.sh).

The same models (mlp 784-256-128-10, cnn conv 3x3x32 pad 1 / relu / max-pool 2 /
dense 128 / dense 10, linear 784-10), the same initialisation (He-normal
weights, zero biases), optimiser settings (SGD with momentum 0.9, or Adam with
betas 0.9, 0.999), batch (64 by default), the same IDX files scaled to [0, 1],
a reshuffle every epoch and the last partial batch dropped; two threads, as
the machines kiln is measured on have two cores. Prints one line per epoch:

  epoch 1/1  loss 0.5123  time 12.34 s  9331 samples/s  test accuracy 84.12%

The time covers the training steps only (batch gathering, forward, backward,
step, reading the loss), as kiln-train's does. Needs python3-torch (Debian).
"""
import argparse
import gzip
import os
import struct
import sys
import time

import torch

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(directory, name):
    for path in (os.path.join(directory, name + ".gz"), os.path.join(directory, name)):
        if os.path.exists(path):
            with open(path, "rb") as f:
                blob = f.read()
            if blob[:2] == b"\x1f\x8b":
                blob = gzip.decompress(blob)
            zero, kind, ndim = struct.unpack(">HBB", blob[:4])
            if zero != 0 or kind != 0x08:
                sys.exit("%s: expected an IDX file of u8" % path)
            dims = struct.unpack(">%dI" % ndim, blob[4:4 + 4 * ndim])
            data = torch.frombuffer(bytearray(blob[4 + 4 * ndim:]), dtype=torch.uint8)
            return data.reshape(dims)
    sys.exit("%s has neither %s.gz nor %s (Debian package dataset-fashion-mnist)"
             % (directory, name, name))


def load(directory, split):
    images = read_idx(directory, split + "-images-idx3-ubyte").float().div_(255.0)
    images = images.sub_(0.2860).div_(0.3530)  # as kiln-train: standardised
    labels = read_idx(directory, split + "-labels-idx1-ubyte").long()
    return images, labels


def model(name):
    nn = torch.nn
    if name == "linear":
        layers = [nn.Flatten(), nn.Linear(784, 10)]
    elif name == "mlp":
        layers = [nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128),
                  nn.ReLU(), nn.Linear(128, 10)]
    else:
        layers = [nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                  nn.Linear(32 * 14 * 14, 128), nn.ReLU(), nn.Linear(128, 10)]
    m = nn.Sequential(*layers)
    for layer in m:
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(layer.weight)  # N(0, 2 / fan_in), as kiln's layers
            nn.init.zeros_(layer.bias)
    return m


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["mlp", "cnn", "linear"], default="mlp")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="adam")
    p.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    lr = a.lr if a.lr is not None else (0.001 if a.optimizer == "adam" else 0.02)

    train_x, train_y = load(a.data, "train")
    test_x, test_y = load(a.data, "t10k")
    if a.model == "cnn":
        train_x, test_x = train_x.unsqueeze(1), test_x.unsqueeze(1)
    m = model(a.model)
    opt = (torch.optim.Adam(m.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
           if a.optimizer == "adam" else torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9))
    print("torch %s, %d threads: model %s, %s lr %g, batch %d"
          % (torch.__version__, torch.get_num_threads(), a.model, a.optimizer, lr, a.batch))
    steps = len(train_x) // a.batch
    # as kiln-train: the lr falls to 0 along a half cosine over all steps
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.epochs * steps)
             if a.schedule == "cosine" else None)
    for epoch in range(1, a.epochs + 1):
        order = torch.randperm(len(train_x))
        total = 0.0
        m.train()
        t0 = time.perf_counter()
        for s in range(steps):
            idx = order[s * a.batch:(s + 1) * a.batch]
            loss = torch.nn.functional.cross_entropy(m(train_x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched:
                sched.step()
            total += loss.item()
        elapsed = time.perf_counter() - t0
        m.eval()
        with torch.no_grad():
            correct = sum((m(test_x[i:i + 1000]).argmax(1) == test_y[i:i + 1000]).sum().item()
                          for i in range(0, len(test_x), 1000))
        print("epoch %d/%d  loss %.4f  time %.2f s  %.0f samples/s  test accuracy %.2f%%"
              % (epoch, a.epochs, total / steps, elapsed, steps * a.batch / elapsed,
                 100.0 * correct / len(test_x)), flush=True)


if __name__ == "__main__":
    main()
