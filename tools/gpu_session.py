"""One GPU session, budgeted: smoke test, throughput, recipe race, reference run, ablation queue.

Run by ``tools/gpu_session.sh BUDGET_S`` (see there). Every finished run is appended at once to
``$OUT/runs.jsonl`` (an :mod:`xception_lib.ledger`), every throughput measurement to
``$OUT/throughput.jsonl``, so a session cut at any point keeps what finished. The phases:

1. **smoke**: one epoch of ``xception_cifar`` and of the ResNet-18 control on 4,096 images; a
   failure stops the session (exit 3) before any real work.
2. **throughput**: total training images/s of N concurrent processes (N = 1, 2, 4), without and
   (if the budget allows) with ``torch.compile``; the best N sizes the next phases.
3. **race**: the control and every recipe of ``runs.RECIPES`` on ``xception_cifar``,
   one seed each, N at a time.
4. **reference**: the race's best recipe again, alone on the GPU, so that its time is its own.
5. **queue**: ``experiments.ablation_queue`` (15 epochs, 3 seeds), skipping runs the book's
   ledger already holds, N at a time, until the budget.

A job starts only if its predicted time fits what is left; at the deadline the workers are
stopped. ``--dry-run`` does all of it on a CPU at a tiny size (a test, never a result: its runs
are marked ``preview``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing as mp
import os
import queue as queues
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from xception_lib import (
    ledger,  # noqa: E402
    runs,  # noqa: E402
)
from xception_lib.chapters import experiments as ex  # noqa: E402
from xception_lib.config import XceptionConfig  # noqa: E402

PHASES = ("smoke", "throughput", "race", "reference", "queue")


@dataclasses.dataclass(frozen=True)
class Size:
    """How big everything is: the real session, or the CPU dry run."""

    device: str
    xception: Any  # the race's architecture
    sweep: Any  # the queue's base
    train: dict[str, Any]  # TrainConfig overrides of every run
    smoke: dict[str, Any]
    queue_epochs: int
    seeds: int
    concurrency: tuple[int, ...]
    throughput_s: float  # measuring window of each throughput level
    with_compile: bool
    throughput_cost_s: tuple[float, float]  # what one level costs, without and with compile (start-up included)
    step_time: bool  # measure each run's time per step before training


def size(dry_run: bool) -> Size:
    if dry_run:
        tiny = {"train_subset": 32, "test_subset": 32, "batch_size": 16, "epochs": 1, "compile": False}
        return Size(
            "cpu", ex.preview_base(), ex.preview_base(), tiny, tiny, 1, 1, (1, 2), 0.5, False, (5.0, 0.0), False
        )
    return Size(
        "cuda",
        XceptionConfig.cifar(),
        ex.sweep_base(),
        {},
        {"epochs": 1, "train_subset": 4096, "test_subset": 1000},
        15,
        3,
        (1, 2, 4),
        10.0,
        True,
        (30.0, 90.0),
        True,
    )


def log(out: Path, text: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {text}"
    print(line, flush=True)
    with open(out / "session.log", "a", encoding="utf-8") as f:
        f.write(line + "\n")


# ---------------------------------------------------------------- jobs and workers


def job_config(job: dict[str, Any], s: Size) -> Any:
    from xception_lib import train as tr

    settings = {**job.get("train", {}), **s.train, "seed": job.get("seed", 0)}
    if s.device == "cpu":
        return ex.preview_train_config("cpu", **settings)
    return tr.recommended_config(s.device, **settings)


def execute(job: dict[str, Any], data: Any, s: Size, command: str) -> ledger.Run:
    """Train one job (a JSON-able dict) and return its run."""
    recipe = runs.recipe(job["recipe"]) if job.get("recipe") else None
    if job["architecture"] == "resnet18":
        architecture: Any = "resnet18"
    else:
        base = s.sweep if job["kind"] == "ablation" else s.xception
        architecture = dataclasses.replace(base, **job.get("changes", {}), **(recipe.model if recipe else {}))
    train = {**(recipe.train if recipe else {}), **job.get("train", {})}
    if s.device == "cpu":
        train.pop("compile", None)  # no C++ toolchain needed for a dry run
    cfg = job_config({**job, "train": train}, s)
    return runs.train_run(
        job["name"],
        architecture,
        cfg,
        data,
        device=s.device,
        kind=job["kind"],
        study=job["study"],
        step_time=s.step_time,
        changes=job.get("changes", {}),
        extras=recipe,
        command=command,
        notes=job.get("notes", {}),
    )


def worker(jobs: Any, results: Any, out: str, dry_run: bool, command: str) -> None:
    """A training process: load the data once, then run jobs until told to stop (``None``)."""
    from xception_lib import data as xd

    torch.set_num_threads(1 if dry_run else max(1, (os.cpu_count() or 2) // 4))
    s = size(dry_run)
    if s.device == "cuda":
        torch.backends.cudnn.benchmark = True
    data = xd.load_cifar("cifar10")
    while (job := jobs.get()) is not None:
        start = time.perf_counter()
        try:
            run = execute(job, data, s, command)
            ledger.append(run, Path(out) / ledger.LEDGER_NAME)
            best = max([run.final_test_acc, *run.metrics.values()])
            results.put(
                {
                    "job": job,
                    "ok": True,
                    "acc": run.final_test_acc,
                    "best": best,
                    "metrics": run.metrics,
                    "wall_s": time.perf_counter() - start,
                    "epochs": run.epochs,
                }
            )
        except Exception:  # noqa: BLE001  (reported, the session goes on)
            results.put(
                {"job": job, "ok": False, "error": traceback.format_exc(limit=3), "wall_s": time.perf_counter() - start}
            )


def run_jobs(
    jobs: list[dict[str, Any]], workers: int, deadline: float, out: Path, dry_run: bool, command: str
) -> list[dict]:
    """Run ``jobs`` in order on ``workers`` processes; start none that would end after ``deadline``."""
    ctx = mp.get_context("spawn")
    todo, results = ctx.Queue(), ctx.Queue()
    procs = [
        ctx.Process(target=worker, args=(todo, results, str(out), dry_run, command), daemon=True)
        for _ in range(min(workers, len(jobs)))
    ]
    for p in procs:
        p.start()
    per_epoch: dict[str, float] = {}  # observed seconds per epoch, by architecture
    pending, busy, done = list(jobs), 0, []
    while pending or busy:
        while pending and busy < len(procs):
            job = pending[0]
            estimate = per_epoch.get(job["architecture"], job.get("epoch_s", 0.0)) * job.get("epochs", 1) + job.get(
                "overhead_s", 5.0
            )
            if time.time() + estimate > deadline:
                log(
                    out,
                    f"not starting {job['kind']} {job['name']} seed {job.get('seed', 0)}: ~{estimate:.0f} s would pass the budget",
                )
                pending.pop(0)
                continue
            todo.put(pending.pop(0))
            busy += 1
            log(out, f"start {job['kind']} {job['name']} seed {job.get('seed', 0)}")
        if not busy:
            break
        try:
            result = results.get(timeout=max(1.0, deadline - time.time()))
        except queues.Empty:
            log(out, f"budget spent with {busy} job(s) running: stopping them")
            break
        busy -= 1
        done.append(result)
        job = result["job"]
        if result["ok"]:
            per_epoch[job["architecture"]] = max(
                per_epoch.get(job["architecture"], 0.0), result["wall_s"] / result["epochs"]
            )
            log(
                out,
                f"{job['kind']} {job['name']} seed {job.get('seed', 0)}: {100 * result['acc']:.2f}% "
                f"{json.dumps({k: round(100 * v, 2) for k, v in result['metrics'].items()})} in {result['wall_s']:.0f} s",
            )
        else:
            log(out, f"{job['kind']} {job['name']} FAILED:\n{result['error']}")
    for _ in procs:
        todo.put(None)
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.terminate()
    return done


# ---------------------------------------------------------------- throughput


def measure(
    barrier: Any, results: Any, architecture: Any, compiled: bool, window_s: float, device: str, batch: int
) -> None:
    """One process: train steps of random data; after all processes are warm, count images for ``window_s``."""
    from xception_lib.runtime import resolve_amp, synchronize
    from xception_lib.train import train_step

    torch.set_num_threads(1)
    model = runs.build_model(architecture).to(device, memory_format=torch.channels_last).train()
    step_model = torch.compile(model) if compiled else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, 32, 32, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    dtype = resolve_amp("auto", device)
    scaler = torch.amp.GradScaler(torch.device(device).type, enabled=dtype == torch.float16)

    def step() -> None:
        train_step(step_model, x, y, optimizer, scaler, dtype)

    for _ in range(3):  # compilation and cuDNN's autotuning happen here
        step()
    synchronize(device)
    barrier.wait()
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < window_s:
        step()
        steps += 1
        if steps % 10 == 0:
            synchronize(device)
    synchronize(device)
    results.put(steps * batch / (time.perf_counter() - start))


def throughput(n: int, compiled: bool, s: Size, timeout_s: float) -> dict[str, Any] | None:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    batch = s.train.get("batch_size", 512)
    procs = [
        ctx.Process(
            target=measure, args=(barrier, results, s.xception, compiled, s.throughput_s, s.device, batch), daemon=True
        )
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    rates = []
    try:
        for _ in procs:
            rates.append(results.get(timeout=timeout_s))
    except queues.Empty:
        pass
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.terminate()
    if len(rates) < n:
        return None
    from xception_lib.provenance import environment

    return {
        "format": "xception_lib.throughput/1",
        "model": "xception_cifar" if s.device == "cuda" else "preview_base",
        "processes": n,
        "compile": compiled,
        "batch_size": batch,
        "window_s": s.throughput_s,
        "images_per_sec": rates,
        "total_images_per_sec": sum(rates),
        "environment": environment(s.device).to_dict(),
        "preview": s.device != "cuda",
    }


# ---------------------------------------------------------------- the session


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, required=True)
    parser.add_argument("--dry-run", action="store_true", help="everything tiny, on the CPU: a test, not a result")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"some of {','.join(PHASES)}")
    parser.add_argument("--race-share", type=float, default=0.45, help="fraction of the budget for race + reference")
    args = parser.parse_args(argv)
    phases = args.phases.split(",")
    if not 0 < args.budget_s < math.inf:  # NaN too
        parser.error(f"--budget-s: expected a number of seconds > 0, got {args.budget_s}")
    if not 0 < args.race_share <= 1:
        parser.error(f"--race-share: expected a fraction in (0, 1], got {args.race_share}")
    if set(phases) - set(PHASES):
        parser.error(f"--phases: expected some of {','.join(PHASES)}, got {sorted(set(phases) - set(PHASES))}")
    out = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()  # a real write: permissions can mislead
    except OSError as error:
        parser.error(f"--out {out}: cannot write results there ({error.strerror or error}); give a writable folder")
    try:  # a ledger damaged by an earlier, cut session: say so now, not after the race
        ledger.read(out / ledger.LEDGER_NAME)
    except ValueError as error:
        parser.error(str(error))
    start = time.time()
    deadline = start + args.budget_s
    s = size(args.dry_run)
    if s.device == "cuda" and not torch.cuda.is_available():
        log(out, "no CUDA GPU: stopping (use --dry-run for a CPU test)")
        return 3
    command = f"tools/gpu_session.sh {args.budget_s:g}" + (" (dry run)" if args.dry_run else "")
    log(out, f"budget {args.budget_s:g} s, device {s.device}, commit {os.environ.get('XCEPTION_COMMIT', 'unknown')}")
    workers = 1

    if "smoke" in phases:
        smoke = [
            {"kind": "smoke", "study": "smoke", "name": n, "architecture": a, "train": s.smoke, "epochs": 1}
            for n, a in (("xception_cifar", "xception"), ("resnet18", "resnet18"))
        ]
        results = run_jobs(smoke, 1, deadline, out, args.dry_run, command)
        if len(results) < 2 or not all(r["ok"] for r in results):
            log(out, "smoke run failed: stopping")
            return 3
        log(out, "smoke run passed")

    epoch_s = 0.0
    if "throughput" in phases:
        best = (0.0, 1)
        for compiled in (False, True) if s.with_compile else (False,):
            for n in s.concurrency if not compiled else sorted({1, workers}):
                if time.time() + s.throughput_cost_s[compiled] > start + 0.25 * args.budget_s:
                    log(out, f"throughput: no time for {n} process(es), compile={compiled}")
                    continue
                record = throughput(n, compiled, s, timeout_s=180 if compiled else 60)
                if record is None:
                    log(out, f"throughput: {n} process(es), compile={compiled} failed or timed out")
                    continue
                ledger.append_json_line(out / "throughput.jsonl", record)
                log(
                    out,
                    f"throughput: {n} process(es), compile={compiled}: {record['total_images_per_sec']:,.0f} images/s in all",
                )
                if not compiled and record["total_images_per_sec"] > best[0] * 1.1:
                    best = (record["total_images_per_sec"], n)
            workers = best[1]
        if best[0]:
            images = s.train.get("train_subset", 50_000) * 1.2  # the evaluation costs about a fifth more
            epoch_s = images / (best[0] / workers)  # one process's epoch at that concurrency
        log(out, f"concurrency for the race and the queue: {workers}")

    winner = None
    race_end = start + args.race_share * args.budget_s if "queue" in phases or "reference" in phases else deadline
    if "race" in phases:
        race = [
            {
                "kind": "control",
                "study": "race",
                "name": "resnet18",
                "architecture": "resnet18",
                "recipe": "baseline+flip",
                "epochs": s.train.get("epochs", 30),
                "epoch_s": 2 * epoch_s,
            }
        ]
        race += [
            {
                "kind": "recipe",
                "study": "race",
                "name": r.name,
                "architecture": "xception",
                "recipe": r.name,
                "epochs": s.train.get("epochs", r.train.get("epochs", 30)),
                "epoch_s": epoch_s,
            }
            for r in runs.RECIPES
        ]
        results = [
            r
            for r in run_jobs(race, workers, race_end, out, args.dry_run, command)
            if r["ok"] and r["job"]["kind"] == "recipe"
        ]
        if results:
            winner = max(results, key=lambda r: r["best"])["job"]
            log(out, f"race winner: {winner['name']} ({100 * max(r['best'] for r in results):.2f}%)")

    if "reference" in phases and winner is not None:
        reference = {**winner, "kind": "reference", "study": "reference", "epoch_s": epoch_s / max(1, workers)}
        run_jobs(
            [reference],
            1,
            race_end + 0.25 * args.budget_s if "queue" in phases else deadline,
            out,
            args.dry_run,
            command,
        )

    if "queue" in phases:
        from xception_lib import train as tr

        cfg = (
            job_config({"train": {"epochs": s.queue_epochs}}, s)
            if s.device == "cpu"
            else tr.recommended_config("cuda", epochs=s.queue_epochs, compile=False)
        )
        known = ledger.read() + ledger.read(out / ledger.LEDGER_NAME)
        jobs = [
            {
                "kind": "ablation",
                "study": "ablations",
                "name": p.name,
                "architecture": "xception-sweep",
                "changes": p.changes,
                "seed": c.seed,
                "train": {"epochs": s.queue_epochs, "compile": False},
                "epochs": s.queue_epochs,
                "epoch_s": epoch_s / 3,
            }
            for p, c in ex.ablation_queue(s.sweep, s.seeds, cfg, known)
        ]
        log(out, f"ablation queue: {len(jobs)} run(s) missing")
        run_jobs(jobs, workers, deadline, out, args.dry_run, command)
    log(out, f"done in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
