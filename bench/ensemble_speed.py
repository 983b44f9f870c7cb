"""Ensemble confidence vs 30-sample MC dropout on the same input batch and device.

Both architectures (LSTM and Transformer encoder), 4 members each, window 32, 16 features.
Per architecture and batch size it times:

- ``ensemble (batched)``: all members in ONE forward pass (member-batched weights);
- ``ensemble (loop)``: the same members one at a time in a Python loop (the comparison the
  issue asks for);
- ``MC dropout (S samples)``: one member, S dropout samples as one batched pass;
- ``MC dropout (S, loop)``: the same samples as S separate passes (how it is often written).

Speed ratios are against the batched ensemble, measured in the same run. Weights are random
(speed does not depend on training). The feature builder's cost for 25,000 bars is
reported too. Run: ``python bench/ensemble_speed.py [--device cuda]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from _table import print_table, summary

from quantcrew.ml_server.services.ensemble.nets import (
    NetConfig,
    build_net,
    mc_dropout_logits,
    member_logits,
    member_loop_logits,
)


def _time(fn: Callable[[], object], repeats: int, device: str) -> list[float]:
    for _ in range(5):
        fn()
    out = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _mc_loop(net: torch.nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    return torch.stack([mc_dropout_logits(net, x, 1, member=0, seed=s)[0] for s in range(samples)])  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the server's compute_threads)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    s = args.samples
    device = args.device
    print(f"device {device} ({torch.cuda.get_device_name() if device == 'cuda' else f'{args.threads} CPU thread(s)'}),"
          f" torch {torch.__version__}, {args.members} members, MC dropout {args.samples} samples, "
          f"{args.repeats} timed calls each; times in ms")
    rows = []
    for arch in ("lstm", "transformer"):
        net = build_net(NetConfig(arch=arch, members=args.members, window=32, hidden=32, dropout=0.1), seed=0)
        net = net.to(device).eval()
        for b in (int(v) for v in args.batches.split(",")):
            x = torch.randn(b, 32, 16, device=device)
            with torch.no_grad():
                cases: dict[str, Callable[[], object]] = {
                    "ensemble (batched)": lambda net=net, x=x: member_logits(net, x),
                    "ensemble (loop)": lambda net=net, x=x: member_loop_logits(net, x),
                    f"MC dropout ({s}, batched)": lambda net=net, x=x: mc_dropout_logits(net, x, s, seed=1),
                    f"MC dropout ({s}, loop)": lambda net=net, x=x: _mc_loop(net, x, s),
                }
                times = {name: summary(_time(fn, args.repeats, device)) for name, fn in cases.items()}
            base = times["ensemble (batched)"]["median"]
            for name, t in times.items():
                rows.append([arch, b, name, t["median"], t["p95"], t["p99"], f"{t['median'] / base:.2f}x"])
    print_table(["arch", "batch", "method", "median_ms", "p95_ms", "p99_ms", "vs ensemble"], rows)

    from quantcrew.data.synthetic import generate_regime_market
    from quantcrew.ml_server.services.ensemble.features import build_features

    bars = generate_regime_market(25_000, seed=0).bars
    feat_times = summary(_time(lambda: build_features(bars.open, bars.high, bars.low, bars.close, bars.volume),
                               20, "cpu"))
    print(f"\nbuild_features, 25,000 bars, 16 features: median {feat_times['median']:.1f} ms, "
          f"p95 {feat_times['p95']:.1f} ms (target < 500 ms)")
    assert np.isfinite(feat_times["median"])


if __name__ == "__main__":
    main()
