"""Convert the first GPU session's JSON records (``xception_lib.experiments/1``) into ledger lines.

Run once, from the repository root, when the records moved into the ledger::

    python tools/records_from_json.py book/results/cifar10.json:reference \\
        book/results/ablations.json:ablation book/results/ablations_4epochs.json:ablation \\
        --into xception_lib/records/runs.jsonl

Every run keeps its record's provenance: the environment (with its ``commit_note``), the
command, the data, and the sweep's sizing and completeness in ``notes``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xception_lib import ledger  # noqa: E402
from xception_lib.history import History  # noqa: E402
from xception_lib.provenance import Environment  # noqa: E402


def runs_of(record: dict, kind: str, source: str) -> list[ledger.Run]:
    study = "reference" if kind == "reference" else "ablations"
    notes = {"source_record": source, "record_complete": record["complete"]}
    if record.get("sizing"):
        notes["sweep"] = record["sizing"]
    out = []
    for run in record["runs"]:
        out.append(ledger.Run(
            kind=kind, study=study, name=run["name"], model="xception", model_config=run["model_config"],
            changes=run["changes"], train_config=run["train_config"], seed=run["seed"],
            epochs=len(run["history"]["test_acc"]), params=run["params"], macs=run["macs"],
            final_test_acc=run["final_test_acc"], wall_time_s=run["wall_time_s"], images_per_sec=run["images_per_sec"],
            history=History.from_dict(run["history"]), environment=Environment.from_dict(record["environment"]),
            data=record["data"], command=record["command"], step_time_s=run["step_time_s"],
            step_batch_size=run["step_batch_size"], notes=notes, preview=record["preview"],
        ))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("records", nargs="+", help="PATH:KIND pairs")
    parser.add_argument("--into", type=Path, required=True)
    args = parser.parse_args()
    for item in args.records:
        path, kind = item.rsplit(":", 1)
        runs = runs_of(ledger.read_json(path), kind, Path(path).name)
        for run in runs:
            ledger.append(run, args.into)
        print(f"{path}: {len(runs)} run(s) -> {args.into}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
