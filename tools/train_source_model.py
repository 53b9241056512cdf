"""Train the source network of chapter 9 (transfer learning): a small Xception that has never seen the target classes.

Chapter 9 adapts a trained network to classes it was not trained on. Offline and on a CPU the book cannot use the
ImageNet weights, so it ships its own source network: a quarter-width ``xception_cifar`` with two middle blocks
(about 0.3 M parameters, under 1 MB in float16), trained with the library's own ``fit`` on CIFAR-10's first five
classes (``xl.transfer.SOURCE_CLASSES``: airplane, automobile, bird, cat, deer). The other five (dog, frog, horse,
ship, truck) are the chapter's target. Each half holds both vehicles and animals, as ImageNet holds both the kind of
images and the kind of classes a reader later adapts it to: the target's classes are new, their kind of picture is
not. The script writes into ``xception_lib/assets/``:

* ``xception_cifar5_source.pth``: ``{"model": float16 state dict, "model_config": ..., "train_config": ...}``;
* ``xception_cifar5_source.json``: its provenance (the configs, history, accuracy of the float16 weights on the
  source classes' 5,000 test images, command, data, classes, machine, torch version, commit, date, duration).

Run from the repository root (the shipped file took 2 epochs, 20 minutes on one thread of a 2-core machine shared
with other jobs; its provenance file has the exact figures)::

    XCEPTION_DATA=/path/to/data python tools/train_source_model.py --epochs 2

``--measure`` trains a few steps only and prints the images per second, to size ``--epochs`` first.
The run resumes from ``--work-dir`` if it is interrupted.
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

import torch

import xception_lib as xl
from xception_lib.checkpoint import atomic_save
from xception_lib.evaluation import evaluate
from xception_lib.provenance import environment
from xception_lib.train import TrainConfig, fit
from xception_lib.transfer import SOURCE_CLASSES, class_subset

ASSETS = Path(__file__).resolve().parent.parent / "xception_lib" / "assets"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--width", type=float, default=0.25, help="width_multiplier of xception_cifar")
    parser.add_argument("--middle-blocks", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure", action="store_true", help="train 20 steps, print images/s, write nothing")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/xception_cifar5_source"))
    parser.add_argument("--output", type=Path, default=ASSETS / "xception_cifar5_source.pth")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.threads < 1:
        parser.error("--epochs and --threads must be >= 1")
    if not args.output.parent.is_dir():
        parser.error(f"--output's folder {args.output.parent} does not exist")

    torch.set_num_threads(args.threads)
    data = class_subset(xl.data.load_cifar("cifar10"), SOURCE_CLASSES)
    torch.manual_seed(args.seed)
    model = xl.xception_cifar(len(SOURCE_CLASSES), width_multiplier=args.width, middle_blocks=args.middle_blocks)
    cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, amp="off", eval_batch_size=500,
        eval_every=args.epochs, log_every=20, seed=args.seed, max_steps=20 if args.measure else None,
    )  # fmt: skip
    start = time.perf_counter()
    history = fit(model, data, cfg, device="cpu", checkpoint_dir=None if args.measure else args.work_dir)
    wall_s = time.perf_counter() - start  # of this invocation (a resumed run counts only its own part)
    if args.measure:
        print(
            f"{history.images_per_sec[-1]:.1f} images/s on {args.threads} thread(s); "
            f"one epoch of {len(data.train_labels):,} images: {len(data.train_labels) / history.images_per_sec[-1] / 60:.1f} min"
        )
        return

    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    atomic_save(
        {"model": state, "model_config": dataclasses.asdict(model.config), "train_config": cfg.to_dict()}, args.output
    )
    shipped = xl.Xception(model.config)
    shipped.load_state_dict(torch.load(args.output, weights_only=True)["model"])
    test_acc = evaluate(shipped, data.test_images, data.test_labels, device="cpu", mean=data.mean, std=data.std)
    env = environment("cpu")
    env_dict = env.to_dict() if hasattr(env, "to_dict") else dict(env)
    provenance = {
        "file": args.output.name,
        "sha256": hashlib.sha256(args.output.read_bytes()).hexdigest(),
        "bytes": args.output.stat().st_size,
        "model": f"xception_cifar({len(SOURCE_CLASSES)}, width_multiplier={args.width:g}, middle_blocks={args.middle_blocks})",
        "parameters": sum(p.numel() for p in shipped.parameters()),
        "dtype": "float16",
        "data": Path(str(xl.data.load_cifar("cifar10").source)).name,
        "classes": list(SOURCE_CLASSES),
        "train_images": len(data.train_labels),
        "test_images": len(data.test_labels),
        "test_accuracy": test_acc,
        "epochs": history.epochs,
        "history": {k: getattr(history, k) for k in ("train_loss", "train_acc", "epoch_time", "images_per_sec")},
        "train_config": cfg.to_dict(),
        "model_config": json.loads(json.dumps(dataclasses.asdict(model.config))),
        "threads": args.threads,
        "wall_seconds": wall_s,
        "training_seconds": sum(history.epoch_time),
        "environment": {k: str(v) if v is not None else None for k, v in env_dict.items()},
        "command": "python "
        + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
    }
    args.output.with_suffix(".json").write_text(json.dumps(provenance, indent=1) + "\n")
    print(
        f"wrote {args.output} ({provenance['bytes']:,} bytes): test accuracy {test_acc:.2%} on {len(data.test_labels):,} images"
    )


if __name__ == "__main__":
    main()
