"""The ablations change exactly what they say; the queue; runs are valid ledger runs; tables, verdicts; the command line."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import conv_macs, n_params
from torch import nn

import xception_lib as xl
from xception_lib import complexity as cx
from xception_lib import runs as xr
from xception_lib.chapters import experiments as ex
from xception_lib.chapters import style
from xception_lib.chapters.__main__ import main

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # behaviour, not speed: one thread (conftest)


@pytest.fixture(scope="module")
def small_base() -> xl.XceptionConfig:
    """A quarter-width CIFAR base with one middle block: every layer kind, fast on a CPU."""
    return xl.XceptionConfig.cifar(width_multiplier=0.25, middle_blocks=1)


# ---------------------------------------------------------------- the ablation list


def test_spectrum_runs_from_regular_to_depthwise() -> None:
    assert ex.spectrum_segments(xl.XceptionConfig.cifar()) == [1, 2, 4, 8, 16, 32, 64, None]
    assert ex.spectrum_segments(ex.sweep_base()) == [1, 2, 4, 8, 16, 32, None]
    base = ex.sweep_base()
    too_far = 2 * max(g for g in ex.spectrum_segments(base) if g is not None)
    with pytest.raises(ValueError, match="must divide"):
        dataclasses.replace(base, segments=too_far)


@pytest.mark.parametrize("base", [ex.sweep_base(), ex.preview_base()], ids=["sweep", "preview"])
def test_each_ablation_changes_exactly_its_field(base: xl.XceptionConfig) -> None:
    points = ex.ablations(base)
    reference = dataclasses.asdict(base)
    assert points[0].name == "base" and points[0].config == base
    segments = [g for g in ex.spectrum_segments(base) if g is not None]
    assert [p.name for p in points[1:]] == [
        "residual=False",
        "activation=relu",
        "activation=elu",
        *[f"segments={g}" for g in segments],
    ]
    for point in points:
        changed = {k: v for k, v in dataclasses.asdict(point.config).items() if reference[k] != v}
        assert changed == point.changes


def test_ablations_reject_a_base_that_is_already_ablated() -> None:
    with pytest.raises(ValueError, match=r"expected a base with the paper's choices .*'residual': False"):
        ex.ablations(ex.sweep_base().__class__.cifar(residual=False))


# ---------------------------------------------------------------- closed-form layout and differences


@pytest.mark.parametrize(
    ("config", "size"),
    [
        (xl.XceptionConfig.cifar(width_multiplier=0.25, middle_blocks=1), 32),
        (xl.XceptionConfig.imagenet(width_multiplier=0.25, middle_blocks=2), 71),
    ],
    ids=["cifar", "imagenet-71px"],
)
def test_separable_layout_matches_the_model(config: xl.XceptionConfig, size: int) -> None:
    model = xl.Xception(config).eval()
    seen: list[tuple[int, int, int, int]] = []
    seps = [m for m in model.modules() if isinstance(m, xl.SeparableConv2d)]
    handles = [m.register_forward_hook(lambda m, i, o: seen.append((i[0].shape[1], *o.shape[1:]))) for m in seps]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    layout = ex.separable_layout(config, size)
    assert list(layout.itertuples(index=False, name=None)) == seen


def test_segments_change_only_the_spatial_step_as_the_formulas_say(small_base: xl.XceptionConfig) -> None:
    """segments=g: each separable conv's spatial params go from 9 C to 9 C (C / g); MACs likewise x H W."""
    layout = list(ex.separable_layout(small_base).itertuples())
    depthwise = xl.Xception(small_base)
    base_macs = conv_macs(small_base)
    for g in [g for g in ex.spectrum_segments(small_base) if g is not None]:
        config = dataclasses.replace(small_base, segments=g)
        model = xl.Xception(config)
        param_delta = sum(
            cx.conv_params(s.in_channels, s.in_channels, 3, groups=g) - cx.depthwise_params(s.in_channels, 3)
            for s in layout
        )
        assert param_delta == sum(9 * s.in_channels * (s.in_channels // g - 1) for s in layout)
        assert n_params(model) - n_params(depthwise) == param_delta
        mac_delta = sum(
            cx.conv_macs(s.in_channels, s.in_channels, 3, s.height, s.width, groups=g)
            - cx.depthwise_macs(s.in_channels, 3, s.height, s.width)
            for s in layout
        )
        assert conv_macs(config) - base_macs == mac_delta
        # Only the spatial convolutions differ: everything else has the same shapes.
        a, b = depthwise.state_dict(), model.state_dict()
        assert a.keys() == b.keys()
        differing = {k for k in a if a[k].shape != b[k].shape}
        seps = {n: m for n, m in depthwise.named_modules() if isinstance(m, xl.SeparableConv2d)}
        assert differing == {f"{n}.depthwise.weight" for n, m in seps.items() if m.depthwise.in_channels > g}


def _shortcuts(config: xl.XceptionConfig, size: int = 32) -> list[tuple[int, int, int]]:
    """(C_in, C_out, output size) of every block whose shortcut is a 1x1 conv + BN, from the config."""
    c = config.channels
    prev, out = c(config.stem_channels[1]), []
    for channels, stride in zip(config.entry_channels, config.entry_strides, strict=True):
        size = size if stride == 1 else -(-size // 2)
        if prev != c(channels) or stride != 1:
            out.append((prev, c(channels), size))
        prev = c(channels)
    size = size if config.exit_stride == 1 else -(-size // 2)
    out.append((prev, c(config.exit_channels[0]), size))
    return out


def test_residual_off_removes_exactly_the_shortcut_convs_and_bns(small_base: xl.XceptionConfig) -> None:
    with_res = xl.Xception(small_base)
    without = xl.Xception(dataclasses.replace(small_base, residual=False))
    shortcuts = _shortcuts(small_base)
    assert len(shortcuts) == 4  # three entry blocks and the exit block; the middle flow's are identities
    removed = set(with_res.state_dict()) - set(without.state_dict())
    assert removed == {k for k in with_res.state_dict() if ".shortcut." in k}
    assert not set(without.state_dict()) - set(with_res.state_dict())
    expected = sum(cx.conv_params(cin, cout, 1) + 2 * cout for cin, cout, _ in shortcuts)  # conv + BN weight, bias
    assert n_params(with_res) - n_params(without) == expected
    expected_macs = sum(cx.conv_macs(cin, cout, 1, s, s) for cin, cout, s in shortcuts)
    assert conv_macs(small_base) - conv_macs(without.config) == expected_macs
    assert all(b.shortcut is None for b in without.modules() if isinstance(b, xl.XceptionBlock))


@pytest.mark.parametrize("activation", ["relu", "elu"])
def test_intermediate_activation_changes_outputs_not_params(small_base: xl.XceptionConfig, activation: str) -> None:
    config = dataclasses.replace(small_base, intermediate_activation=activation)
    torch.manual_seed(0)
    base = xl.Xception(small_base).eval()
    other = xl.Xception(config).eval()
    other.load_state_dict(base.state_dict())  # strict: the same tensors, the same shapes
    assert n_params(other) == n_params(base)
    assert conv_macs(config) == conv_macs(small_base)
    kinds = {type(m.intermediate) for m in other.modules() if isinstance(m, xl.SeparableConv2d)}
    assert kinds == {nn.ReLU if activation == "relu" else nn.ELU}
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert not torch.allclose(base.forward_features(x), other.forward_features(x))


# ---------------------------------------------------------------- the queue, the recipes, the control


def test_queue_runs_the_claims_first_seed_by_seed_and_skips_what_is_done(small_base: xl.XceptionConfig) -> None:
    cfg = ex.preview_train_config("cpu", epochs=15)
    queue = ex.ablation_queue(small_base, 3, cfg)
    claims = ["base", "residual=False", "activation=relu", "activation=elu"]
    spectrum = [f"segments={g}" for g in ex.spectrum_segments(small_base)[:-1]]
    assert [(p.name, c.seed) for p, c in queue] == [(n, s) for s in range(3) for n in claims] + [
        (n, s) for s in range(3) for n in spectrum
    ]
    assert all(dataclasses.replace(c, seed=0) == cfg for _, c in queue)
    done = [_fake_run(p, c) for p, c in queue[:5]]  # the first round and one more
    other_recipe = [_fake_run(p, dataclasses.replace(c, epochs=2)) for p, c in queue[5:8]]  # another recipe: not done
    left = ex.ablation_queue(small_base, 3, cfg, done + other_recipe)
    assert [(p.name, c.seed) for p, c in left] == [(p.name, c.seed) for p, c in queue[5:]]
    with pytest.raises(ValueError, match="seeds >= 1"):
        ex.ablation_queue(small_base, 0, cfg)


def _fake_run(point: ex.Ablation, cfg) -> xl.ledger.Run:
    history = xl.history.History()
    history.append_epoch(train_loss=1, train_acc=0.1, test_loss=1, test_acc=0.1, lr=0.1, images_per_sec=1, epoch_time=1)
    return xl.ledger.Run(
        kind="ablation",
        study="ablations",
        name=point.name,
        model="xception",
        model_config=json.loads(json.dumps(dataclasses.asdict(point.config))),
        changes=point.changes,
        train_config=dataclasses.asdict(cfg),
        seed=cfg.seed,
        epochs=1,
        params=1,
        macs=1,
        final_test_acc=0.1,
        wall_time_s=1,
        images_per_sec=1,
        history=history,
        environment=xl.ledger.Environment("cuda", "GPU", "2", "2026-01-01"),
        data={"name": "cifar10", "source": "x", "train_size": 1, "test_size": 1},
        command="pytest",
    )


# ---------------------------------------------------------------- runs on real CIFAR-10

DATA = os.environ.get("XCEPTION_DATA") or str(REPO.parent / "shared" / "data")


@pytest.fixture(scope="module")
def cifar():
    if not Path(DATA).exists():
        pytest.skip(f"no CIFAR-10 copy at {DATA}; set XCEPTION_DATA")
    return xl.data.load_cifar("cifar10", root=DATA)


@pytest.fixture(scope="module")
def tiny_runs(cifar) -> list:
    """Two experiments x two seeds of the preview base, 2 steps of 32 real images each."""
    cfg = ex.preview_train_config("cpu", train_subset=64, test_subset=64, batch_size=32)
    return [
        xr.train_run(
            p.name, p.config, c, cifar, device="cpu", changes=p.changes, command="pytest", step_time=p.name == "base"
        )
        for p, c in ex.ablation_queue(ex.preview_base(), 2, cfg)
        if "intermediate_activation" not in p.changes
    ]


@pytest.mark.slow
@pytest.mark.data
def test_runs_are_valid_ledger_lines(tiny_runs: list, tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    for run in tiny_runs:
        xl.ledger.append(run, path)
    assert xl.ledger.read(path) == tiny_runs
    for run in tiny_runs:
        assert run.preview and not run.is_result and run.environment.device == "cpu"
        assert run.train_config["train_subset"] == 64 and run.train_config["seed"] == run.seed
        assert run.epochs == 1 and len(run.history.step_loss) == 2  # 64 / 32 steps
        assert run.final_test_acc == run.history.test_acc[-1]
        config = xl.XceptionConfig.cifar(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in run.model_config.items()} | {}
        )
        assert config == dataclasses.replace(ex.preview_base(), **run.changes)
        assert run.params == n_params(xl.Xception(config))
    base = [r for r in tiny_runs if r.name == "base"]
    assert base[0].history.train_loss != base[1].history.train_loss and base[0].step_time_s > 0  # seeds differ
    rows = {s.name: s for s in xl.ledger.summarize(tiny_runs)}
    assert all(s.n == 2 for s in rows.values())
    assert rows["residual=False"].first.params < rows["base"].first.params < rows["segments=1"].first.params


@pytest.mark.slow
@pytest.mark.data
def test_tables_and_figures_draw_the_runs(tiny_runs: list) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = ex.summary_table(tiny_runs)
    assert list(table.index) == ["base", "residual=False", "segments=1", "segments=2", "segments=4", "segments=8"]
    assert set(table["runs"]) == {2} and all(len(line) <= 88 for line in table.to_string().splitlines())
    effects = ex.effects_table({"first": tiny_runs, "again": tiny_runs})
    assert list(effects.columns) == ["first", "again", "MACs x", "time x"] and "base" not in effects.index
    assert all(cell.endswith("(2)") for cell in effects["first"])
    fig = ex.plot_experiment(tiny_runs, "residual")
    curves, finals = fig.axes
    assert [line.get_label() for line in curves.get_lines()] == ["True (2)", "False (2)"]
    assert curves.get_lines()[0].get_color() == style.colour("xception")  # the base in Xception's colour
    assert not finals.patches and len(finals.containers) == 2  # a dot plot (mean ± s.e.), no bars
    assert fig.get_size_inches()[0] <= 7.5
    plt.close(fig)
    fig = ex.plot_spectrum(tiny_runs)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "2", "4", "8", "dw"]
    assert fig.get_size_inches()[0] <= 7.5
    assert min(t.get_fontsize() for ax in fig.axes for t in ax.texts) >= 9
    plt.close(fig)


@pytest.mark.slow
@pytest.mark.data
def test_goal_reads_the_goal_off_the_history(tiny_runs: list) -> None:
    run = tiny_runs[0]
    report = ex.Goal(run, target_acc=0.0, target_s=1e6).report().splitlines()
    assert report[0].endswith("goal met") and report[1].endswith("goal met") and " 1 epochs " in report[0]
    assert f"({run.wall_time_s:.2f} s per epoch" in report[0] and "(best epoch 1)" in report[1]
    assert ex.Goal(run, target_acc=1.01).report().splitlines()[1].endswith("goal missed")


def test_goal_report_and_verdict_say_met_or_missed() -> None:
    history = xl.history.History()
    for epoch in range(30):  # the best test accuracy in epoch 28
        test_acc = 0.9 if epoch == 27 else 0.897
        history.append_epoch(
            train_loss=1, train_acc=0.994, test_loss=1, test_acc=test_acc, lr=0.1, images_per_sec=1, epoch_time=1
        )
    point = ex.Ablation("base", {}, xl.XceptionConfig.cifar())
    fake = _fake_run(point, xl.train.recommended_config("cpu"))
    run = dataclasses.replace(fake, id="", epochs=30, history=history, final_test_acc=0.897, wall_time_s=150.0)
    goal = ex.Goal(run)
    assert goal.verdict().startswith("The recorded run misses the time goal (150 s of 120 s) and misses the accuracy")
    assert "89.70% of 94%" in goal.verdict() and "9.7 points more" in goal.verdict()
    met = ex.Goal(dataclasses.replace(run, id="", wall_time_s=100.0), target_s=110.0)
    assert "meets the time goal (100 s of 110 s)" in met.verdict()
    report = goal.report().splitlines()
    assert report[0].endswith("goal missed") and "(5.00 s per epoch" in report[0] and "(best epoch 28)" in report[1]
    assert "in 120 s: 24" in report[-1] and len(report) == 4


def test_cost_table_and_verdict_read_every_sweep() -> None:
    sweeps = {f"{n}-epoch": ex.ablation_runs(n) for n in (2, 4)}
    table = ex.cost_table(sweeps)
    assert list(table.columns) == ["MACs x", "time x, 2-epoch", "time x, 4-epoch"]
    two = {e.name: e for e in xl.ledger.effects(sweeps["2-epoch"])}
    assert table.loc["segments=32", "time x, 2-epoch"] == two["segments=32"].step_time_ratio
    slowest = table["time x, 4-epoch"].idxmax()
    verdict = ex.cost_verdict(sweeps)
    assert verdict.count("sweep") == 2 and f"the slowest was {slowest} " in verdict.split("4-epoch")[1]


def test_effect_verdict_applies_the_chapters_rule() -> None:
    effect = xl.ledger.Effect("x", 3, 3, 0.03, 0.01, 1.0, 1.0)
    assert ex.effect_verdict(effect) == "+3.00 ± 1.00 points (3 vs 3 runs): a real effect"
    assert ex.effect_verdict(dataclasses.replace(effect, delta=-0.025)).endswith("suggestive, not settled")
    assert ex.effect_verdict(dataclasses.replace(effect, delta=0.01)).endswith("no evidence either way")
    assert ex.effect_verdict(dataclasses.replace(effect, n=2)).endswith("too few runs for a verdict")


def test_command_today_renames_only_the_old_entry_points() -> None:
    assert ex.command_today("python -m xception_lib.experiments ablations --seeds 3") == (
        "python -m xception_lib.chapters ablations --seeds 3"
    )
    assert (
        ex.command_today("python -m xception_lib.chapters.experiments cifar10")
        == "python -m xception_lib.chapters cifar10"
    )
    assert ex.command_today("python tools/other.py") == "python tools/other.py"


def test_the_book_finds_the_recorded_runs() -> None:
    reference = ex.reference_run()
    assert reference is not None and reference.is_result and reference.kind == "reference"
    two = ex.ablation_runs(epochs=2)
    assert {s.n for s in xl.ledger.summarize(two)} == {3} and len(xl.ledger.summarize(two)) == 10


def test_readme_quotes_the_recorded_gpu_results() -> None:
    """The README's GPU table is typed by hand: hold it to the ledger."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    reference = ex.reference_run()
    assert f"**{100 * reference.final_test_acc:.2f}%**" in readme
    assert f"**{reference.wall_time_s:.0f} s**" in readme
    effect = {e.name: e for e in xl.ledger.effects(ex.ablation_runs(epochs=2))}
    for name, label in (("residual=False", "residual off"), ("activation=relu", "ReLU"), ("activation=elu", "ELU")):
        assert f"{label} {100 * effect[name].delta:.1f} ± {100 * effect[name].se:.1f}" in readme, name


# ---------------------------------------------------------------- the command line


@pytest.mark.slow
@pytest.mark.data
def test_command_line_appends_preview_runs(cifar, tmp_path: Path) -> None:
    out = tmp_path / "runs.jsonl"
    args = ["ablations", "--preview", "--out", str(out), "--data-root", DATA, "--seeds", "1"]
    args += ["--train-subset", "32", "--test-subset", "32", "--batch-size", "32", "--no-progress"]
    assert main(args) == 0
    runs = xl.ledger.read(out)
    assert [r.name for r in runs] == [p.name for p in ex.ablations(ex.preview_base())] and all(r.preview for r in runs)
    assert runs[0].command == "python -m xception_lib.chapters " + " ".join(args)
    assert main(args) == 0 and len(xl.ledger.read(out)) == len(runs)  # run again: nothing missing, nothing added


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ablations", "--preview", "--seeds", "0"], "--seeds: expected a positive int, got '0'"),
        (["ablations", "--preview", "--seeds", "two"], r"--seeds: invalid literal for int\(\) with base 10: 'two'"),
        (["ablations", "--preview", "--budget-s", "nan"], "--budget-s: expected a positive float"),
        (["cifar10", "--preview", "--recipe", "fastest"], "--recipe: unknown recipe 'fastest'; expected one of"),
        (["cifar10", "--preview", "--epochs", "-1"], "--epochs: expected a positive int"),
        (["cifar10", "--preview", "--device", "cuda:x"], "--device: device 'cuda:x' is not a device"),
        (
            ["cifar10", "--preview", "--data-root", "/nonexistent/cifar"],
            "--data-root /nonexistent/cifar: does not exist",
        ),
        (
            ["cifar10", "--preview", "--out", "/proc/runs.jsonl"],
            "--out: output /proc/runs.jsonl: cannot write in /proc",
        ),
        (["cifar10", "--preview", "--out", "{tmp}"], "--out: .*: expected a ledger file .*, got 'a folder'"),
        (["cifar10", "--preview", "--out", "{tmp}/bad.jsonl/runs.jsonl"], "--out: .*: cannot write in .*bad.jsonl"),
        (["cifar10", "--preview", "--out", "{tmp}/bad.jsonl"], r"--out: .*bad.jsonl, line 1: not valid JSON"),
    ],
)
def test_command_line_checks_every_argument_before_any_work(args, message, tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "runs.jsonl")]
    monkeypatch.setattr(
        xl.data, "load_cifar", lambda *a, **k: pytest.fail("work started before the arguments were checked")
    )
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the full schedule would start")
def test_command_line_refuses_the_full_schedule_on_a_cpu(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["cifar10", "--out", str(tmp_path / "runs.jsonl")])
    assert "pass --preview" in capsys.readouterr().err


# ---------------------------------------------------------------- the GPU session, dry


def _session(tmp_path: Path, budget: int, **env: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OUT": str(tmp_path / "out"),
        "PYTHON": sys.executable,
        "XCEPTION_COMMIT": "test",
        "XCEPTION_DATA": DATA,
        **env,
    }
    return subprocess.run(
        ["bash", str(REPO / "tools" / "gpu_session.sh"), str(budget)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=budget + 120,
    )


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the session would train")
def test_gpu_session_stops_without_a_gpu_and_records_nothing(tmp_path: Path) -> None:
    done = _session(tmp_path, 60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "no CUDA GPU: stopping" in (tmp_path / "out" / "session.log").read_text()
    assert not (tmp_path / "out" / "runs.jsonl").exists()


@pytest.mark.slow
@pytest.mark.data
def test_gpu_session_dry_run_goes_through_every_phase(cifar, tmp_path: Path) -> None:
    """The one command, tiny, on the CPU: what a GPU session does, appended as each run finishes."""
    done = _session(tmp_path, 400, XCEPTION_DRY_RUN="1")
    log = (tmp_path / "out" / "session.log").read_text()
    assert done.returncode == 0, log + done.stderr
    runs = xl.ledger.read(tmp_path / "out" / "runs.jsonl")
    assert all(r.preview and not r.is_result for r in runs)
    kinds = [r.kind for r in runs]
    assert kinds[:2] == ["smoke", "smoke"] and "control" in kinds and "reference" in kinds
    race = [r for r in runs if r.kind == "recipe"]
    assert [r.name for r in race] == [r.name for r in xr.RECIPES][: len(race)] and race
    winner = max(race, key=lambda r: max([r.final_test_acc, *r.metrics.values()]))
    assert next(r for r in runs if r.kind == "reference").name == winner.name
    started = re.findall(r"start ablation (\S+) seed", log)  # concurrent runs may finish in any order
    assert started[:4] == ["base", "residual=False", "activation=relu", "activation=elu"]
    assert sorted(started) == sorted(r.name for r in runs if r.kind == "ablation")  # each started run was recorded
    throughput = [json.loads(line) for line in (tmp_path / "out" / "throughput.jsonl").read_text().splitlines()]
    assert throughput and throughput[0]["processes"] == 1 and throughput[0]["total_images_per_sec"] > 0


def test_a_single_run_shows_no_standard_error() -> None:
    assert ex._pm(0.6784, math.nan) == "67.84"  # a preview of one run: no "± n/a"
    assert ex._pm(0.6784, 0.0025) == "67.84 ± 0.25"
    assert ex._pm(-0.1823, 0.0318, sign=True) == "-18.23 ± 3.18"
