#!/usr/bin/env python3
"""PyTorch reference for the floating-point ResNet-20 training step of `train_step` (the Rust bench).

The same network as crates/models/src/resnet20.rs (pre-activation ResNet-20: 3x3 stem, three
stages of three basic blocks with 16/32/64 channels, BN-ReLU before every conv, 1x1 projection
shortcuts without bias where the shape changes, BN-ReLU, global average pooling, linear
classifier), the same step (batch 128 of 3x32x32 N(0,1) inputs, cross-entropy, SGD lr 0.01,
momentum 0.9 without dampening, weight decay 5e-4, batch norm in training mode), on the CPU with
`--threads` threads (default: every core, as the Rust bench uses).

Prints one JSON line: {"torch": version, "threads": n, "step_seconds": [...], "median": s}.
Exits with status 3 and a message on stderr when torch cannot be imported.

    python3 baselines/pytorch/resnet20_step.py [--steps 7] [--warmup 2] [--threads N]
"""
import argparse
import json
import os
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # the Rust bench reports this and goes on without the reference
    print(f"torch is not importable ({e}); install it with `pip install torch`", file=sys.stderr)
    sys.exit(3)


def conv(cin, cout, k, stride, pad):
    c = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=False)
    nn.init.kaiming_normal_(c.weight, nonlinearity="relu")
    return c


class PreActBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = conv(cin, cout, 3, stride, 1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = conv(cout, cout, 3, 1, 1)
        self.shortcut = conv(cin, cout, 1, stride, 0) if stride != 1 or cin != cout else None

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        skip = self.shortcut(pre) if self.shortcut is not None else x
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class ResNet20(nn.Module):
    def __init__(self, cin=3, classes=10):
        super().__init__()
        self.stem = conv(cin, 16, 3, 1, 1)
        blocks, ch = [], 16
        for stage, width in enumerate([16, 32, 64]):
            for b in range(3):
                blocks.append(PreActBlock(ch, width, 2 if stage > 0 and b == 0 else 1))
                ch = width
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        x = F.adaptive_avg_pool2d(F.relu(self.bn(x)), 1)
        return self.fc(torch.flatten(x, 1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--batch", type=int, default=128)
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    model = ResNet20().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, dampening=0.0, weight_decay=5e-4)
    x = torch.randn(a.batch, 3, 32, 32)
    y = torch.arange(a.batch) % 10
    times = []
    for i in range(a.warmup + a.steps):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if i >= a.warmup:
            times.append(time.perf_counter() - start)
    print(json.dumps({"torch": torch.__version__, "threads": a.threads, "step_seconds": times,
                      "median": statistics.median(times)}))


if __name__ == "__main__":
    main()
