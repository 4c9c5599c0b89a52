#!/usr/bin/env python3
"""kiln-train --model gpt's recipe in PyTorch, for a side-by-side comparison.

    python3 tools/bench/gpt_torch.py --data TEXTFILE [--layers 4 --heads 4
        --embd 128 --ctx 128 --batch 32 --steps 1000 --lr 1e-3 --warmup 100
        --eval-every 250 --seed 1 --threads 2]

Prints the same lines as kiln-train: "step N train X val Y ms/step Z tok/s W"
and "final val Y ms/step Z". The model, data split, initialisation,
optimiser, clipping and schedule follow kiln-train(1); the random windows
come from Python's generator, not kiln's, so the losses agree in
distribution, not bit for bit. The validation batches are drawn from a fixed
seed, as kiln-train's are. Use PyTorch 2.x from PyPI in a venv
(`pip install torch numpy`); Debian's python3-torch 1.13 is several times
slower on this workload.
"""
import argparse
import math
import random
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 256
VAL_BATCHES = 20
VAL_SEED = 0x5EED


class Block(nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H = H
        self.ln_1 = nn.LayerNorm(C, eps=1e-5)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, a.embd)
        self.wpe = nn.Embedding(a.ctx, a.embd)
        self.h = nn.ModuleList(Block(a.embd, a.heads) for _ in range(a.layers))
        self.ln_f = nn.LayerNorm(a.embd, eps=1e-5)
        resid = 0.02 / math.sqrt(2 * a.layers)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln_" in name:
                nn.init.ones_(p)
            else:
                std = resid if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids, targets):
        T = ids.shape[1]
        x = self.wte(ids) + self.wpe(torch.arange(T))
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, VOCAB), targets.view(-1))


def batch(data, lo, hi, a, rng):
    offs = [lo + rng.randrange(hi - lo - a.ctx) for _ in range(a.batch)]
    x = torch.stack([data[o:o + a.ctx] for o in offs]).long()
    y = torch.stack([data[o + 1:o + 1 + a.ctx] for o in offs]).long()
    return x, y


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    for name, default in (("layers", 4), ("heads", 4), ("embd", 128), ("ctx", 128),
                          ("batch", 32), ("steps", 1000), ("warmup", 100),
                          ("eval-every", 250), ("seed", 1), ("threads", 2)):
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--lr", type=float, default=1e-3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    with open(a.data, "rb") as f:
        data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
    n_train = len(data) * 9 // 10
    model = GPT(a)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    rng = random.Random(a.seed)
    print(f"torch {torch.__version__}, {a.threads} threads; "
          f"{sum(p.numel() for p in model.parameters())} parameters")

    def lr_at(step):
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        decay_steps = a.steps - a.warmup
        done = (step - a.warmup) / (decay_steps - 1) if decay_steps > 1 else 1.0
        return a.lr * 0.5 * (1 + math.cos(math.pi * done))

    def val_loss():
        vr = random.Random(VAL_SEED)
        with torch.no_grad():
            return sum(model(*batch(data, n_train, len(data), a, vr)).item()
                       for _ in range(VAL_BATCHES)) / VAL_BATCHES

    train_sum, step_time, all_time, since, last_val = 0.0, 0.0, 0.0, 0, 0.0
    for step in range(a.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        x, y = batch(data, 0, n_train, a, rng)
        start = time.perf_counter()
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        took = time.perf_counter() - start
        step_time += took
        all_time += took
        train_sum += loss.item()
        since += 1
        if (step + 1) % a.eval_every and step + 1 != a.steps:
            continue
        last_val = val_loss()
        ms = 1e3 * step_time / since
        print(f"step {step + 1} train {train_sum / since:.4f} val {last_val:.4f} "
              f"ms/step {ms:.1f} tok/s {a.batch * a.ctx / (ms / 1e3):.0f}", flush=True)
        train_sum, step_time, since = 0.0, 0.0, 0
    print(f"final val {last_val:.4f} ms/step {1e3 * all_time / a.steps:.1f}")


if __name__ == "__main__":
    main()
