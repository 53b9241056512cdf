"""The book's command lines, one entry point: ``python -m xception_lib.chapters <command> --help``.

``bench`` times models, layers and the device's roofs (:func:`xception_lib.benchmark.run`); ``cifar10`` trains the
reference run (chapter 5) and ``ablations`` chapter 6's queue, each appended to a ledger. Every argument is checked
before any work; a mistake exits with a message naming it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from xception_lib import benchmark, data, ledger, runs, train
from xception_lib.chapters import bench, experiments
from xception_lib.config import XceptionConfig
from xception_lib.timing import clock

PROG = "python -m xception_lib.chapters"


def _checked(check: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a check that raises ``ValueError``: argparse reports its message with the option."""

    def parse(text: str) -> Any:
        try:
            return check(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def _positive(kind: type) -> Callable[[str], Any]:
    def check(text: str) -> Any:
        value = kind(text)  # not a number: its ValueError
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    return _checked(check)


def _ledger(path: str) -> Path:
    ledger.read(path)  # if it exists: a ledger file, every line a valid run
    return benchmark.check_writable(path)


def parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    top = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    device, writable = _checked(benchmark.check_device), _checked(benchmark.check_writable)
    b = sub.add_parser("bench", help="time models, layers and roofs on one device")
    b.add_argument("--device", default="cpu", type=device, help="cpu, cuda, cuda:1, mps (default: cpu)")
    b.add_argument("--quick", action="store_true", help="fewer rounds, batch 1 on CPU, variants on Xception only")
    b.add_argument("--models", nargs="+", choices=benchmark.MODEL_NAMES, help="models to compare (default: all)")
    b.add_argument("--variant-models", nargs="*", choices=benchmark.MODEL_NAMES, help="also run other variants")
    b.add_argument("--batch-size", type=_positive(int))
    b.add_argument("--rounds", type=_positive(int))
    b.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="default: GPU only")
    b.add_argument("--threads", type=_positive(int), help="CPU threads (default: PyTorch's)")
    b.add_argument(
        "--no-layers", dest="layers", action="store_false", help="skip the layer benchmarks and the roofline"
    )
    b.add_argument("--output", type=writable, help="write JSON here, e.g. xception_lib/records/bench_gpu_h100.json")
    helps = {"cifar10": "the reference run of xl.xception_cifar with a recipe", "ablations": "the ablation queue"}
    for name, text in helps.items():
        p = sub.add_parser(name, help=text)
        p.add_argument("--out", required=True, type=_checked(_ledger), help="the ledger (JSON Lines) to append to")
        p.add_argument("--data-root", default=None, help="CIFAR-10 location (default: $XCEPTION_DATA)")
        p.add_argument("--device", default=None, type=device, help="default: cuda if available, else cpu")
        p.add_argument("--preview", action="store_true", help="a labelled CPU-sized preview (never a GPU result)")
        for flag in ("--epochs", "--batch-size", "--train-subset", "--test-subset"):
            p.add_argument(flag, type=_positive(int), default=None)
        p.add_argument("--no-progress", action="store_true")
        if name == "cifar10":
            p.add_argument("--seed", type=int, default=0)
            recipes = [r.name for r in runs.RECIPES]
            p.add_argument("--recipe", default="baseline+flip", type=_checked(runs.recipe), help=f"one of {recipes}")
        else:
            p.add_argument("--seeds", type=_positive(int), default=3, help="seeds per config (default 3)")
            p.add_argument("--budget-s", type=_positive(float), default=None, help="start no run after this")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Parse and check the arguments, then run the command."""
    top = parser()
    args = top.parse_args(argv)
    if args.command == "bench":
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        options = {k: v for k, v in vars(args).items() if k not in ("command", "threads", "output")}
        results = benchmark.run(**options, progress=lambda line: print(f"... {line}", file=sys.stderr, flush=True))
        print(bench.format_results(results))
        if args.output is not None:
            print(f"wrote {benchmark.save(results, args.output)}")
        return 0
    device = args.device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.preview:
        top.error("no GPU: the full schedule is meant for one; pass --preview for a labelled CPU preview")
    if args.data_root is not None and not Path(args.data_root).exists():
        top.error(f"--data-root {args.data_root}: does not exist")
    command = shlex.join([*PROG.split(), *(sys.argv[1:] if argv is None else argv)])
    cifar = data.load_cifar("cifar10", root=args.data_root)
    overrides = {k: v for k in ("epochs", "batch_size", "train_subset", "test_subset") if (v := getattr(args, k))}
    elapsed = clock()
    chosen = args.recipe if args.command == "cifar10" else None
    schedule = {} if chosen or args.preview else {"epochs": 15}  # the ablations' schedule on a GPU
    settings = {**chosen.train, "seed": args.seed, **overrides} if chosen else {**schedule, **overrides}
    cfg = (experiments.preview_train_config if args.preview else train.recommended_config)(device, **settings)
    common: dict[str, Any] = {"device": device, "extras": chosen, "command": command, "progress": not args.no_progress}
    if chosen:
        config = experiments.preview_base() if args.preview else XceptionConfig.cifar()
        queue = [(experiments.Ablation(chosen.name, {}, dataclasses.replace(config, **chosen.model)), cfg)]
        common |= {"kind": "reference", "study": "reference"}
    else:  # train_run's defaults: kind "ablation", study "ablations"
        base = experiments.preview_base() if args.preview else experiments.sweep_base()
        queue = experiments.ablation_queue(base, args.seeds, cfg, ledger.read(args.out))
    for point, cfg in queue:
        if getattr(args, "budget_s", None) and elapsed() > args.budget_s:
            print(f"budget of {args.budget_s:g} s spent: stopping before {point.name}, seed {cfg.seed}")
            break
        run = runs.train_run(point.name, point.config, cfg, cifar, changes=point.changes, **common)
        ledger.append(run, args.out)
        print(
            f"{run.name} seed {run.seed}: test accuracy {run.final_test_acc:.2%} in {run.wall_time_s:.1f} s -> {args.out}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
