"""The one entry point of the book's command lines: ``python -m xception_lib.chapters <command>``.

The training commands (``cifar10``, ``ablations``) are tested in ``test_experiments.py`` beside the queue they run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from xception_lib import benchmark
from xception_lib.chapters.__main__ import main


def test_command_writes_valid_json(tmp_path: Path, capsys) -> None:
    out = tmp_path / "new" / "bench.json"
    code = main(
        [
            "bench",
            "--models",
            "mobilenet_v2",
            "--variant-models",
            "--no-layers",
            "--rounds",
            "1",
            "--batch-size",
            "1",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    results = benchmark.load(out)
    assert results.layers == () and results.roofline is None
    assert {r.mode for r in results.models} == {"forward", "train"}
    assert "MobileNetV2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--rounds", "0"], "--rounds: expected a positive int, got '0'"),
        (["--batch-size", "-2"], "--batch-size: expected a positive int, got '-2'"),
        (["--threads", "0"], "--threads: expected a positive int"),
        (["--device", "gpu"], "not a device"),
        (["--models", "vgg16"], "invalid choice"),
        (["--rounds", "two"], "--rounds: invalid literal for int() with base 10: 'two'"),
    ],
)
def test_command_checks_every_argument_before_any_work(args, message, monkeypatch, capsys) -> None:
    monkeypatch.setattr(benchmark, "run", lambda **_: pytest.fail("the benchmark ran"))
    with pytest.raises(SystemExit) as exit_:
        main(["bench", *args])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_command_checks_the_output_before_the_run(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(benchmark, "run", lambda **_: pytest.fail("the benchmark ran"))
    (tmp_path / "a_file").write_text("")
    for output, message in ((tmp_path, "is a directory"), (tmp_path / "a_file" / "x.json", "cannot write in")):
        with pytest.raises(SystemExit):
            main(["bench", "--output", str(output)])
        assert message in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            main(["bench", "--device", "cuda"])
        assert "not available on this machine" in capsys.readouterr().err
