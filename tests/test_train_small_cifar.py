"""tools/train_small_cifar.py: a bad argument is an error with a non-zero exit, before any data is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import load_tool

import xception_lib as xl


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--epochs", "0"], "--epochs and --threads must be >= 1"),
        (["--lr", "nan"], "lr must be a finite number > 0"),
        (["--batch-size", "0"], "batch_size must be an integer >= 1"),
        (["--train-subset", "-5"], "train_subset must be an integer >= 1"),
        (["--width", "-1"], "width"),
    ],
)
def test_bad_arguments_exit_before_loading_data(
    argv: list[str], said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tool = load_tool("train_small_cifar")

    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was loaded before the arguments were checked")

    monkeypatch.setattr(xl.data, "load_cifar", no_data)
    with pytest.raises(SystemExit) as exited:
        tool.main([*argv, "--output", str(tmp_path / "small.pth"), "--work-dir", str(tmp_path / "work")])
    assert exited.value.code == 2 and said in capsys.readouterr().err


def test_missing_data_is_an_error_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = load_tool("train_small_cifar")
    monkeypatch.setenv("XCEPTION_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit, match="error: CIFAR-10 data not found") as exited:
        tool.main(["--output", str(tmp_path / "small.pth"), "--work-dir", str(tmp_path / "work")])
    assert exited.value.code != 0
