"""Train the small CIFAR-10 Xception that chapter 7 shows when nothing better is available.

The book may be built offline and without a GPU. Chapter 7 then needs a trained network small
enough to ship inside the package: a quarter-width ``xception_cifar`` (about 0.45 M parameters,
under 1 MB in float16), trained two epochs on one CPU thread with the library's own trainer.
The script writes two files into ``xception_lib/assets/``:

* ``xception_cifar10_small.pth``: ``{"model": float16 state dict, "model_config": ...,
  "train_config": ...}``, the same keys as a checkpoint written by ``xl.train.fit``;
* ``xception_cifar10_small.json``: its provenance: the configs, the per-epoch history, the
  test accuracy of the float16 weights on all 10,000 test images, the commit, date, CPU,
  torch version, wall time, the command and the SHA-256 of the ``.pth`` file.

Run from the repository root (the shipped file took 2 epochs, about 40 minutes on one thread of
a 2-core machine shared with other jobs; its provenance file has the exact figures)::

    XCEPTION_DATA=/path/to/data python tools/train_small_cifar.py --epochs 2

The run resumes from ``--work-dir`` if it is interrupted. ``tools/train_source_model.py`` shares
this script's arguments, checks and provenance (:func:`parser`, :func:`setup`, :func:`ship`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

import xception_lib as xl
from xception_lib.checkpoint import atomic_save
from xception_lib.evaluation import evaluate
from xception_lib.provenance import environment
from xception_lib.train import TrainConfig, fit

ASSETS = Path(__file__).resolve().parent.parent / "xception_lib" / "assets"


def parser(doc: str, *, middle_blocks: int, work_dir: str, output: str) -> argparse.ArgumentParser:
    """The arguments of both tools; ``doc``'s first line describes the tool."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--width", type=float, default=0.25, help="width_multiplier of xception_cifar")
    parser.add_argument("--middle-blocks", type=int, default=middle_blocks)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=Path(work_dir))
    parser.add_argument("--output", type=Path, default=ASSETS / output)
    return parser


def setup(
    parser: argparse.ArgumentParser, argv: list[str] | None, classes: int = 10
) -> tuple[argparse.Namespace, xl.Xception, TrainConfig]:
    """The arguments, the model and its recipe, every argument checked (a wrong one exits with status 2) before
    any data is loaded."""
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.threads < 1:
        parser.error("--epochs and --threads must be >= 1")
    if not args.output.parent.is_dir():
        parser.error(f"--output's folder {args.output.parent} does not exist")
    try:
        torch.manual_seed(args.seed)
        model = xl.xception_cifar(classes, width_multiplier=args.width, middle_blocks=args.middle_blocks)
        cfg = TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            amp="off",
            eval_batch_size=500,
            eval_every=args.epochs,  # test once, at the end: a CPU epoch is precious
            log_every=20,
            seed=args.seed,
            train_subset=getattr(args, "train_subset", None),  # the arguments of one tool only
            max_steps=20 if getattr(args, "measure", False) else None,
        )
    except (TypeError, ValueError, RuntimeError) as error:
        parser.error(str(error))
    torch.set_num_threads(args.threads)
    return args, model, cfg


def ship(
    args: argparse.Namespace,
    argv: list[str] | None,
    model: xl.Xception,
    cfg: TrainConfig,
    data: Any,
    record: dict[str, Any],
) -> None:
    """Write the float16 weights to ``args.output`` and their provenance (``record`` first) beside it, as JSON."""
    # Integer buffers such as num_batches_tracked stay as they are; the accuracy is that of exactly what is shipped.
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    atomic_save(
        {"model": state, "model_config": dataclasses.asdict(model.config), "train_config": dataclasses.asdict(cfg)},
        args.output,
    )
    shipped = xl.Xception(model.config)
    shipped.load_state_dict(torch.load(args.output, weights_only=True)["model"])
    test_acc = evaluate(shipped, data.test_images, data.test_labels, device="cpu", mean=data.mean, std=data.std)
    provenance = {
        "file": args.output.name,
        "sha256": hashlib.sha256(args.output.read_bytes()).hexdigest(),
        "bytes": args.output.stat().st_size,
        "parameters": sum(p.numel() for p in shipped.parameters()),
        "dtype": "float16",
        **record,
        "test_images": len(data.test_labels),
        "test_accuracy": test_acc,
        "train_config": dataclasses.asdict(cfg),
        "model_config": json.loads(json.dumps(dataclasses.asdict(model.config))),
        "threads": args.threads,
        "environment": {k: str(v) if v is not None else None for k, v in environment("cpu").to_dict().items()},
        "command": "python "
        + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
    }
    args.output.with_suffix(".json").write_text(json.dumps(provenance, indent=1) + "\n")
    print(
        f"wrote {args.output} ({provenance['bytes']:,} bytes): test accuracy {test_acc:.2%} on {len(data.test_labels):,} images"
    )


def main(argv: list[str] | None = None) -> None:
    tool = parser(__doc__, middle_blocks=4, work_dir="/tmp/xception_small_cifar", output="xception_cifar10_small.pth")
    tool.add_argument("--train-subset", type=int, default=None, help="for a smoke test only")
    args, model, cfg = setup(tool, argv)
    try:
        data = xl.data.load_cifar("cifar10")
    except (xl.data.DataNotFoundError, xl.data.DataError) as error:
        sys.exit(f"error: {error}")
    start = time.perf_counter()
    history = fit(model, data, cfg, device="cpu", checkpoint_dir=args.work_dir)
    record = {
        "model": f"xception_cifar(width_multiplier={args.width:g}, middle_blocks={args.middle_blocks})",
        "data": Path(data.source).name,
        "epochs": history.epochs,
        "history": {k: getattr(history, k) for k in ("train_loss", "train_acc", "epoch_time")},
        "wall_seconds": time.perf_counter() - start,  # of this invocation (a resumed run counts only its own part)
        "training_seconds": history.train_time,
    }
    ship(args, argv, model, cfg, data, record)


if __name__ == "__main__":
    main()
