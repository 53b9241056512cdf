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
The run resumes from ``--work-dir`` if it is interrupted. The arguments, their checks and the provenance are
``tools/train_small_cifar.py``'s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import xception_lib as xl
from xception_lib.train import fit
from xception_lib.transfer import SOURCE_CLASSES, class_subset

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/, also when imported by a test
from train_small_cifar import parser, setup, ship  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    tool = parser(__doc__, middle_blocks=2, work_dir="/tmp/xception_cifar5_source", output="xception_cifar5_source.pth")
    tool.add_argument("--measure", action="store_true", help="train 20 steps, print images/s, write nothing")
    args, model, cfg = setup(tool, argv, classes=len(SOURCE_CLASSES))
    cifar = xl.data.load_cifar("cifar10")
    data = class_subset(cifar, SOURCE_CLASSES)
    start = time.perf_counter()
    history = fit(model, data, cfg, device="cpu", checkpoint_dir=None if args.measure else args.work_dir)
    wall_s = time.perf_counter() - start  # of this invocation (a resumed run counts only its own part)
    if args.measure:
        rate, images = history.images_per_sec[-1], len(data.train_labels)
        print(
            f"{rate:.1f} images/s on {args.threads} thread(s); one epoch of {images:,} images: {images / rate / 60:.1f} min"
        )
        return
    record = {
        "model": f"xception_cifar({len(SOURCE_CLASSES)}, width_multiplier={args.width:g}, middle_blocks={args.middle_blocks})",
        "data": Path(str(cifar.source)).name,
        "classes": list(SOURCE_CLASSES),
        "train_images": len(data.train_labels),
        "epochs": history.epochs,
        "history": {k: getattr(history, k) for k in ("train_loss", "train_acc", "epoch_time", "images_per_sec")},
        "wall_seconds": wall_s,
        "training_seconds": history.train_time,
    }
    ship(args, argv, model, cfg, data, record)


if __name__ == "__main__":
    main()
