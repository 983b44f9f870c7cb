"""GPU check: the server's torch and Monte Carlo paths on CUDA against the CPU, in one run, one table.

Every case runs on the CPU and, when torch sees a CUDA device, on ``cuda`` with the same
inputs; the ``vs cpu`` column is the CPU median over the CUDA median of the same case.
Each row also carries a check that must hold on its device:

- ``MC VaR``: :func:`monte_carlo_var` (100 assets, 2,000,000 paths by default) within 1 % of
  the closed-form normal VaR at 95 % and 99 %, and the same seed giving the same answer;
- ``ensemble train epoch (lstm|transformer)``: :func:`train_net` on synthetic windows whose
  label is learnable; after every epoch each parameter and gradient lives on the device, and
  the training loss falls from the first epoch to the last. Times are per epoch, the first
  (warm-up) epoch left out;
- ``ensemble fit (end to end)``: :meth:`EnsembleModel.fit` (both architectures, calibration,
  MC-dropout temperature) on the device; its nets end on the device;
- ``execution train epoch``: :func:`train_execution_net`, the same placement check;
- ``ensemble logits`` / ``ensemble MC dropout``: an :class:`EnsembleModel` loaded the way the
  server loads one (:meth:`EnsembleModel.from_artifact` on the device) from the CPU-trained
  nets; logits agree with the CPU's, seeded MC dropout repeats itself;
- ``execution MC dropout``: :meth:`ExecutionModel.sample`, seeded draws repeat, sizes in [0, 1];
- ``batcher``: the model's ``batch_logits`` behind a :class:`DynamicBatcher` with concurrent
  asyncio callers (batching on and off); times are per request, the note gives requests per
  second and the mean batch; every answer equals the unbatched forward pass.

``--tests`` / ``--tests-rc`` add the CUDA tests' pytest summary (run by ``bench/gpu_check.sh``)
as a row. Without a CUDA device it says so loudly, runs the CPU rows and exits 2; a failed
check exits 1. Run: ``python bench/gpu_check.py [--quick]`` (normally through ``gpu_check.sh``).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import math
import platform
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from _table import print_table, summary

from quantcrew.ml_server.batching import DynamicBatcher
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.services.ensemble.features import FEATURE_NAMES, WARMUP
from quantcrew.ml_server.services.ensemble.fit import TrainConfig, train_net
from quantcrew.ml_server.services.ensemble.model import EnsembleModel, EnsembleSpec, pack_state
from quantcrew.ml_server.services.ensemble.nets import MemberNet, NetConfig, build_net
from quantcrew.ml_server.services.execution import inputs as xin
from quantcrew.ml_server.services.execution import net as xnet
from quantcrew.ml_server.services.execution.fit import ExecTrainConfig, train_execution_net
from quantcrew.ml_server.services.execution.model import ExecutionModel
from quantcrew.ml_server.services.risk.var import monte_carlo_var, parametric_normal_var

FloatArray = npt.NDArray[np.float64]
LEVELS = [0.95, 0.99]
WINDOW = 32
N_FEATURES = len(FEATURE_NAMES)
ARCHS = ("lstm", "transformer")


@dataclass
class Row:
    case: str
    device: str
    times_ms: list[float]
    ok: bool
    note: str = ""
    detail: list[str] = field(default_factory=list)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object], device: str, *, repeats: int, budget_s: float, warmup: int = 1) -> list[float]:
    """Up to ``repeats`` timed calls after ``warmup`` untimed ones, stopping after ``budget_s`` (3 calls at least)."""
    for _ in range(warmup):
        fn()
    out: list[float] = []
    while len(out) < repeats and (len(out) < 3 or sum(out) < budget_s * 1000):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _on(device: str, tensors: Iterable[torch.Tensor]) -> bool:
    want = torch.device(device).type
    return all(t.device.type == want for t in tensors)


# --- Monte Carlo VaR ------------------------------------------------------------------------------


def mc_var_row(device: str, paths: int, assets: int, repeats: int, budget_s: float) -> Row:
    rng = np.random.default_rng(0)
    beta = rng.normal(1.0, 0.3, assets)
    cov = 1e-4 * np.outer(beta, beta) + np.diag(rng.uniform(1e-4, 9e-4, assets))
    w = np.full(assets, 1.0 / assets)
    mu = np.zeros(assets)

    def run() -> list[Any]:
        return monte_carlo_var(w, mu, cov, LEVELS, n_paths=paths, seed=1, device=device)

    times = _timed(run, device, repeats=repeats, budget_s=budget_s)
    a, b = run(), run()
    exact = parametric_normal_var(0.0, math.sqrt(float(w @ cov @ w)), LEVELS)
    errors = [abs(s.var - e.var) / e.var for s, e in zip(a, exact, strict=True)]
    ok = a == b and max(errors) < 0.01
    return Row(f"MC VaR {assets} assets x {paths:,} paths", device, times, ok,
               note=f"max rel. error vs closed form {max(errors):.2%}")


# --- training placement ---------------------------------------------------------------------------


def learnable_windows(n: int, seed: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Windows whose label (down / flat / up) is the sign of feature 0's mean over the last 5 bars."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, WINDOW, N_FEATURES)).astype(np.float32)
    s = x[:, -5:, 0].mean(axis=1)
    y = np.where(s < -0.25, 0, np.where(s > 0.25, 2, 1)).astype(np.int64)
    return x, y


class _EpochRecorder:
    """Times each training epoch and checks, after each, that every parameter and gradient is on the device."""

    def __init__(self, device: str, net: torch.nn.Module) -> None:
        self.device, self.net = device, net
        self.stamps: list[float] = []
        self.placed: list[bool] = []
        _sync(device)
        self.start = time.perf_counter()

    def on_epoch(self, epoch: int, total: int, train_loss: float, val_loss: float) -> None:
        _sync(self.device)
        self.stamps.append(time.perf_counter())
        params = list(self.net.parameters())
        self.placed.append(_on(self.device, params)
                           and _on(self.device, [p.grad for p in params if p.grad is not None]))

    def times_ms(self) -> npt.NDArray[np.float64]:
        return np.diff([self.start, *self.stamps]) * 1000


def ensemble_train_row(device: str, arch: str, n: int, epochs: int) -> tuple[Row, MemberNet]:
    x, y = learnable_windows(n, seed=1)
    cut = int(0.8 * n)
    net = build_net(NetConfig(arch=arch, members=4, window=WINDOW, hidden=32), seed=0)
    recorder = _EpochRecorder(device, net)
    history = train_net(net, x[:cut], y[:cut], x[cut:], y[cut:],
                        TrainConfig(epochs=epochs, batch_size=256, patience=epochs, seed=0), device=device,
                        on_epoch=recorder.on_epoch)
    times = recorder.times_ms()
    ok = (all(recorder.placed) and len(recorder.placed) == epochs and history.train_loss[-1] < history.train_loss[0]
          and all(math.isfinite(v) for v in history.val_loss))
    row = Row(f"ensemble train epoch ({arch}, 4 members, {cut:,} windows)", device, list(times[1:]), ok,
              note=f"train loss {history.train_loss[0]:.3f} -> {history.train_loss[-1]:.3f}")
    return row, net.cpu()


def ensemble_fit_row(device: str, n_bars: int, epochs: int) -> Row:
    rng = np.random.default_rng(2)
    features = rng.normal(size=(n_bars, N_FEATURES))
    s = np.convolve(features[:, 0], np.ones(5) / 5, mode="full")[:n_bars]
    labels = np.where(s < -0.25, 0, np.where(s > 0.25, 2, 1)).astype(np.int64)
    start = WARMUP + WINDOW
    cut = start + int(0.75 * (n_bars - start))
    configs = {a: NetConfig(arch=a, members=4, window=WINDOW, hidden=32) for a in ARCHS}
    model = EnsembleModel(configs, window=WINDOW, horizon=5, up_threshold=0.005, down_threshold=0.005,
                          train=TrainConfig(epochs=epochs, batch_size=256, patience=epochs, seed=0), mc_samples=30,
                          device=device)
    _sync(device)
    t0 = time.perf_counter()
    model.fit(features, labels, (start, cut), (cut, n_bars))
    _sync(device)
    elapsed = (time.perf_counter() - t0) * 1000
    params = [p for net in model.nets_.values() for p in net.parameters()]
    finite = all(math.isfinite(t) for t in [*model.temperatures_.values(), *model.mc_temperatures_.values()])
    ok = _on(device, params) and finite and math.isclose(sum(model.weights_.values()), 1.0, rel_tol=1e-6)
    return Row(f"ensemble fit end to end (2 archs, {epochs} epochs)", device, [elapsed], ok,
               note="one run; nets on device after fit" if ok else "nets not on device or bad calibration")


def execution_train_row(device: str, n: int, epochs: int) -> tuple[Row, xnet.ExecutionNet, xin.InputScaler]:
    config = xnet.ExecutionConfig()
    d = config.n_inputs
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, d))
    size = 1.0 / (1.0 + np.exp(-x[:, 0]))
    timing = (x[:, 1] > 0).astype(np.int64)
    cut = int(0.8 * n)
    scaler = xin.InputScaler.fit(x[:cut])
    net = xnet.build_execution_net(config, seed=0)
    recorder = _EpochRecorder(device, net)
    history = train_execution_net(
        net, scaler.transform(x[:cut]), size[:cut], timing[:cut], scaler.transform(x[cut:]), size[cut:], timing[cut:],
        ExecTrainConfig(epochs=epochs, batch_size=256, patience=epochs, seed=0), device=device,
        on_epoch=recorder.on_epoch)
    times = recorder.times_ms()
    ok = all(recorder.placed) and len(recorder.placed) == epochs and history.train_loss[-1] < history.train_loss[0]
    row = Row(f"execution train epoch ({cut:,} rows)", device, list(times[1:]), ok,
              note=f"train loss {history.train_loss[0]:.3f} -> {history.train_loss[-1]:.3f}")
    return row, net.cpu(), scaler


# --- inference ------------------------------------------------------------------------------------


def _info(family: str, metadata: dict[str, Any]) -> ModelInfo:
    return ModelInfo(model_id=f"{family}-gpu-check", name=f"{family}-gpu-check", version=1, family=family,
                     method="bench", sha256="0" * 64, created_at=datetime.now(UTC), stage="full", metadata=metadata)


def load_ensemble(nets: dict[str, MemberNet], device: str) -> EnsembleModel:
    """The CPU-trained nets as the server loads a stored ensemble: from its artifact, onto ``device``."""
    configs = {a: n.config for a, n in nets.items()}
    spec = EnsembleSpec(configs=configs, temperatures={a: 1.0 for a in configs},
                        mc_temperatures={a: 1.0 for a in configs}, weights={a: 1 / len(configs) for a in configs},
                        scaler_mean=(0.0,) * N_FEATURES, scaler_std=(1.0,) * N_FEATURES, feature_names=FEATURE_NAMES,
                        window=WINDOW, horizon=5, up_threshold=0.005, down_threshold=0.005, symbol="GPU")
    state = {k: v.clone() for k, v in pack_state(nets).items()}
    return EnsembleModel.from_artifact(state, _info("ensemble", spec.to_metadata()), device=device)


def inference_rows(device: str, nets: dict[str, MemberNet], reference: dict[str, FloatArray] | None, batch: int,
                   samples: int, repeats: int, budget_s: float) -> tuple[list[Row], dict[str, FloatArray]]:
    model = load_ensemble(nets, device)
    x, _ = learnable_windows(batch, seed=4)
    logits = {a: v.astype(np.float64) for a, v in model.logits(x).items()}
    placed = _on(device, [p for n in model.nets_.values() for p in n.parameters()])
    if reference is None:
        agree, gap = placed, 0.0
    else:
        gap = max(float(np.max(np.abs(logits[a] - reference[a]))) for a in logits)
        agree = placed and gap < 1e-3
    rows = [Row(f"ensemble logits (2 archs x 4 members, batch {batch})", device,
                _timed(lambda: model.logits(x), device, repeats=repeats, budget_s=budget_s, warmup=2), agree,
                note="reference" if reference is None else f"max |logit - cpu| {gap:.1e}")]
    a1, a2 = model.mc_logits(x, samples, seed=7), model.mc_logits(x, samples, seed=7)
    repeat = all(np.array_equal(a1[a], a2[a]) and a1[a].shape == (samples, batch, 3) for a in a1)
    rows.append(Row(f"ensemble MC dropout ({samples} samples, batch {batch})", device,
                    _timed(lambda: model.mc_logits(x, samples, seed=7), device, repeats=repeats, budget_s=budget_s),
                    repeat,
                    note="seeded draws repeat" if repeat else "seeded draws differ"))
    return rows, logits


def execution_rows(device: str, net: xnet.ExecutionNet, scaler: xin.InputScaler, batch: int, samples: int,
                   repeats: int, budget_s: float) -> list[Row]:
    config = net.config
    meta = {"config": config.to_dict(), "scaler": scaler.to_dict(), "inputs": list(xin.EXECUTION_INPUTS)}
    model = ExecutionModel.from_artifact(xnet.execution_state(net), _info("execution", meta), device=device)
    x = model.transform(np.random.default_rng(5).normal(size=(batch, config.n_inputs)))
    a, b = model.sample(x, samples, seed=3), model.sample(x, samples, seed=3)
    ok = (np.array_equal(a.size, b.size) and a.size.shape == (samples, batch) and bool(np.all(a.size >= 0))
          and bool(np.all(a.size <= 1)) and _on(device, list(model.net_.parameters())))
    return [Row(f"execution MC dropout ({samples} samples, batch {batch})", device,
                _timed(lambda: model.sample(x, samples, seed=3), device, repeats=repeats, budget_s=budget_s, warmup=2),
                ok,
                note="seeded draws repeat" if ok else "draws differ or out of [0, 1]")]


def batcher_rows(device: str, nets: dict[str, MemberNet], clients: int, seconds: float) -> list[Row]:
    model = load_ensemble(nets, device)
    windows = [learnable_windows(1, seed=100 + i)[0] for i in range(64)]
    expected = [model.logits(w) for w in windows]
    rows = []
    for enabled in (False, True):
        lat: list[float] = []
        answers_ok = True

        async def run(enabled: bool = enabled, lat: list[float] = lat) -> tuple[float, float]:
            nonlocal answers_ok
            batcher: DynamicBatcher[npt.NDArray[np.float32], dict[str, npt.NDArray[np.float32]]] = DynamicBatcher(
                model.batch_logits, name=f"gpu-check-{device}", max_batch_size=64, max_wait_s=0.002, enabled=enabled,
                size_of=len)
            await batcher.submit(windows[0])
            stop = time.perf_counter() + seconds

            async def worker(k: int) -> None:
                nonlocal answers_ok
                i = k
                while time.perf_counter() < stop:
                    t0 = time.perf_counter()
                    got = await batcher.submit(windows[i % 64])
                    lat.append((time.perf_counter() - t0) * 1000)
                    want = expected[i % 64]
                    answers_ok = answers_ok and all(np.allclose(got[a], want[a], atol=1e-4) for a in want)
                    i += clients

            start = time.perf_counter()
            await asyncio.gather(*(worker(k) for k in range(clients)))
            wall = time.perf_counter() - start
            mean_batch = batcher.stats.mean_batch
            await batcher.aclose()
            return wall, mean_batch

        wall, mean_batch = asyncio.run(run())
        ok = answers_ok and bool(lat) and (mean_batch > 1.0 if enabled else True)
        rows.append(Row(f"batcher {'on' if enabled else 'off'}, {clients} clients, 1 window each", device, lat, ok,
                        note=f"{len(lat) / wall:,.0f} req/s, mean batch {mean_batch:.1f}"))
    return rows


# --- the run --------------------------------------------------------------------------------------


class Stopped(Exception):
    """SIGTERM (the wrapper's timeout) arrived: print what was measured so far."""


def _stop(signum: int, frame: object) -> None:
    raise Stopped(f"signal {signum}")


def run_device(device: str, args: argparse.Namespace, rows: list[Row], cpu_nets: dict[str, MemberNet] | None,
               cpu_exec: tuple[xnet.ExecutionNet, xin.InputScaler] | None, reference: dict[str, FloatArray] | None,
               ) -> tuple[dict[str, MemberNet], tuple[xnet.ExecutionNet, xin.InputScaler], dict[str, FloatArray]]:
    """Every case on ``device``, appending to ``rows`` as each one ends."""
    def log(what: str) -> None:
        print(f"[{device}] {what}", flush=True)

    log("Monte Carlo VaR")
    rows.append(mc_var_row(device, args.paths, args.assets, args.repeats, args.budget))
    nets: dict[str, MemberNet] = {}
    for arch in ARCHS:
        log(f"ensemble training ({arch})")
        row, net = ensemble_train_row(device, arch, args.windows, args.epochs)
        rows.append(row)
        nets[arch] = net
    log("ensemble fit end to end")
    rows.append(ensemble_fit_row(device, args.bars, 2))
    log("execution training")
    exec_row, exec_net, scaler = execution_train_row(device, args.exec_rows, args.epochs)
    rows.append(exec_row)
    # inference runs the CPU-trained weights on every device, so CUDA answers can be compared with the CPU's
    use_nets = cpu_nets if cpu_nets is not None else nets
    use_exec = cpu_exec if cpu_exec is not None else (exec_net, scaler)
    log("inference")
    inf, logits = inference_rows(device, copy.deepcopy(use_nets), reference, args.batch, args.samples, args.repeats,
                                 args.budget)
    rows.extend(inf)
    rows.extend(execution_rows(device, use_exec[0], use_exec[1], args.batch, 100, args.repeats, args.budget))
    log("batcher")
    rows.extend(batcher_rows(device, copy.deepcopy(use_nets), args.clients, args.seconds))
    return nets, (exec_net, scaler), logits


def table(rows: list[Row], tests: str | None, tests_ok: bool | None, has_cuda: bool) -> list[list[object]]:
    cpu = {r.case: summary(r.times_ms)["median"] for r in rows if r.device == "cpu"}
    out: list[list[object]] = []
    for r in sorted(rows, key=lambda r: [x.case for x in rows].index(r.case)):
        s = summary(r.times_ms)
        speed = "-" if r.device == "cpu" else f"{cpu[r.case] / s['median']:.1f}x"
        out.append([r.case, r.device, len(r.times_ms), s["median"], s["p95"], speed, "yes" if r.ok else "NO", r.note])
    if tests is not None:
        verdict = ("yes" if has_cuda else "skip") if tests_ok else "NO"
        out.append(["CUDA tests (pytest -k cuda)", "cuda", "-", "-", "-", "-", verdict, tests])
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--paths", type=int, default=2_000_000, help="Monte Carlo paths")
    parser.add_argument("--assets", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=50, help="most timed calls per case")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timed calls per case (3 calls at least)")
    parser.add_argument("--windows", type=int, default=2048, help="windows of the ensemble nets' training")
    parser.add_argument("--bars", type=int, default=1000, help="bars of the end-to-end ensemble fit")
    parser.add_argument("--exec-rows", type=int, default=8192, help="rows of the execution net's training")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (the first one is not timed)")
    parser.add_argument("--batch", type=int, default=256, help="windows per inference call")
    parser.add_argument("--samples", type=int, default=30, help="MC-dropout samples")
    parser.add_argument("--clients", type=int, default=64, help="concurrent batcher callers")
    parser.add_argument("--seconds", type=float, default=3.0, help="per batcher setting and device")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--tests", default=None, help="the CUDA tests' pytest summary line, shown as a row")
    parser.add_argument("--tests-rc", type=int, default=None, help="pytest's exit status for --tests")
    args = parser.parse_args()
    if args.quick:
        args.paths, args.windows, args.bars, args.exec_rows, args.seconds, args.budget = (
            200_000, 1024, 500, 2048, 1.0, 1.0)
    has_cuda = bool(torch.cuda.is_available())
    gpu = torch.cuda.get_device_name(0) if has_cuda else "none"
    print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA build {torch.version.cuda}), "
          f"numpy {np.__version__}, {torch.get_num_threads()} CPU threads, GPU: {gpu}", flush=True)
    if not has_cuda:
        print("\n" + "!" * 72 + "\nNO CUDA DEVICE: GPU rows skipped (running the CPU rows only)\n" + "!" * 72 + "\n",
              flush=True)
    signal.signal(signal.SIGTERM, _stop)
    rows: list[Row] = []
    broken = ""
    t0 = time.perf_counter()
    spent = ""
    try:
        cpu_nets, cpu_exec, reference = run_device("cpu", args, rows, None, None, None)
        spent = f"CPU rows {time.perf_counter() - t0:.0f} s"
        if has_cuda:
            t1 = time.perf_counter()
            torch.backends.cuda.matmul.allow_tf32 = False  # compare float32 answers with the CPU's
            torch.backends.cudnn.allow_tf32 = False
            run_device("cuda", args, rows, cpu_nets, cpu_exec, reference)
            spent += f", CUDA rows {time.perf_counter() - t1:.0f} s"
    except Stopped as e:
        broken = f"stopped by {e} after {time.perf_counter() - t0:.0f} s: the table is partial"
    except Exception:  # a CUDA or library error: show it and what was measured before it
        traceback.print_exc()
        broken = "a case raised (traceback above): the table is partial"
    tests_ok = None if args.tests is None else args.tests_rc == 0
    print(f"\nGPU check, {gpu}; times in ms ({spent or 'incomplete'})")
    headers = ["case", "device", "calls", "median_ms", "p95_ms", "vs cpu", "check", "note"]
    print_table(headers, table(rows, args.tests, tests_ok, has_cuda))
    failed = [f"{r.case} [{r.device}]" for r in rows if not r.ok] + ([] if tests_ok in (None, True) else ["CUDA tests"])
    if broken:
        print(f"\nGPU CHECK INCOMPLETE: {broken}")
        return 1
    if failed:
        print(f"\nFAILED CHECKS: {', '.join(failed)}")
        return 1
    if not has_cuda:
        print("\nNO CUDA DEVICE: only the CPU rows ran; this is not a GPU check")
        return 2
    print("\nall checks passed on CPU and CUDA")
    return 0


if __name__ == "__main__":
    sys.exit(main())
