"""Run chapter 9's full transfer experiment and record it: every regime at every training-set size, over seeds.

Source: the shipped network (``xl.transfer.load_source_model``, trained on CIFAR-10's first five classes).
Target: the other five classes (``xl.transfer.TARGET_CLASSES``), 10, 50 and 250 training images per class (each
seed draws its own), tested on their test images (all 5,000, or ``--test-per-class`` of each). Regimes: from scratch, linear probe, fine-tune the
top, fine-tune all (``xl.transfer.REGIMES``), as ``xl.transfer.run_experiment`` runs them. The result goes to
``xception_lib/assets/transfer_table.json`` with its provenance (command, machine, torch, commit, date, duration,
the source model's SHA-256), rewritten after every seed, so that an interrupted run leaves the seeds it finished
(``"complete": false`` until the last).

Run from the repository root (on one CPU thread this took the time its provenance records)::

    XCEPTION_DATA=/path/to/data python tools/transfer_table.py
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import torch

import xception_lib as xl
from xception_lib import transfer
from xception_lib.provenance import environment


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 250], help="training images per class")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--test-per-class", type=int, default=None, help="test images per class (default: all 1,000)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--source", type=Path, default=transfer.SOURCE_MODEL)
    parser.add_argument("--output", type=Path, default=transfer.TRANSFER_TABLE)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    source, source_provenance = transfer.load_source_model(args.source)
    data = transfer.class_subset(xl.data.load_cifar("cifar10"), transfer.TARGET_CLASSES)
    if args.test_per_class is not None:  # one fixed choice for every run
        data = transfer.few_per_class(data, args.test_per_class, seed=0, split="test")
    env = environment(args.device)
    env_dict = env.to_dict() if hasattr(env, "to_dict") else dict(env)
    record = {
        "experiment": "chapter 9: transfer from CIFAR-10's first five classes to the other five",
        "source_model": args.source.name,
        "source_sha256": hashlib.sha256(args.source.read_bytes()).hexdigest(),
        "source_test_accuracy": source_provenance.get("test_accuracy"),
        "target_classes": list(transfer.TARGET_CLASSES),
        "data": Path(str(xl.data.load_cifar("cifar10").source)).name,
        "test_images": len(data.test_labels),
        "sizes": args.sizes,
        "seeds": [],
        "steps": {str(n): transfer.default_steps(n) for n in args.sizes},
        "threads": args.threads,
        "environment": {k: str(v) if v is not None else None for k, v in env_dict.items()},
        "command": "python "
        + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "complete": False,
        "rows": [],
    }
    start = time.perf_counter()
    for seed in args.seeds:
        table = transfer.run_experiment(source, data, sizes=args.sizes, seeds=[seed], device=args.device)
        record["rows"] += table.to_dict("records")
        record["seeds"].append(seed)
        record["wall_seconds"] = time.perf_counter() - start
        record["complete"] = seed == args.seeds[-1]
        args.output.write_text(json.dumps(record, indent=1) + "\n")
        print(f"seed {seed} done, {record['wall_seconds'] / 60:.1f} min so far; wrote {args.output}", flush=True)


if __name__ == "__main__":
    main()
