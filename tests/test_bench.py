"""The benchmark harness, its layer arithmetic, its typed records and command line, and the
performance changes to the model (which must not change a single number)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

import xception_lib as xl
from xception_lib import benchmark, timing
from xception_lib import complexity as cx
from xception_lib.chapters import bench
from xception_lib.chapters.__main__ import main

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ timing


def test_paired_ratio_is_round_by_round() -> None:
    # B takes twice A's time in every round, even though both drift by 4x.
    assert bench.paired_ratio([1.0, 2.0, 4.0], [2.0, 4.0, 8.0]) == (2.0, 2.0, 2.0)
    med, q1, q3 = bench.paired_ratio([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])
    assert med == 2.5 and (q1, q3) == pytest.approx((1.75, 3.25))
    with pytest.raises(ValueError, match="equally long"):
        bench.paired_ratio([1.0], [1.0, 2.0])


# ------------------------------------------------------------------ layer arithmetic


@pytest.mark.parametrize("kind", benchmark.LAYER_KINDS)
def test_layer_case_macs_match_fvcore(kind: str) -> None:
    case = benchmark.LayerCase(kind, 16, 9)
    assert case.macs(batch_size=2) == cx.count_macs(case.module(), (2, 16, 9, 9))


@pytest.mark.parametrize("kind", benchmark.LAYER_KINDS)
def test_layer_case_bytes_are_input_weights_output(kind: str) -> None:
    case = benchmark.LayerCase(kind, 16, 9)
    conv = case.module()
    x = torch.zeros(3, 16, 9, 9)
    expected = 4 * (x.numel() + conv.weight.numel() + conv(x).numel())
    assert case.bytes_moved(batch_size=3) == expected
    assert case.intensity(batch_size=3) == case.macs(3) / expected


@pytest.mark.parametrize("channels,size", benchmark.LAYER_SHAPES)
def test_depthwise_has_the_lowest_arithmetic_intensity(channels: int, size: int) -> None:
    dw, pw, reg = (benchmark.LayerCase(k, channels, size).intensity(2) for k in ("depthwise", "pointwise", "regular"))
    assert dw < 2 < pw < reg  # depthwise: about 1 MAC per byte, whatever the width


def test_batch_size_raises_the_intensity_of_regular_and_pointwise_only() -> None:
    """What chapter 8's batch-size printout shows: the weights' traffic is shared by more images."""
    for kind, grows in (("regular", True), ("pointwise", True), ("depthwise", False)):
        one, eight = (benchmark.LayerCase(kind, 728, 19).intensity(n) for n in (1, 8))
        assert (eight / one > 1.5) == grows, kind
        assert eight >= one


def test_unknown_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown layer kind"):
        benchmark.LayerCase("dilated", 8, 8).module()
    with pytest.raises(ValueError, match="unknown layer kind"):
        benchmark.layer_cases(kinds=["dilated"])
    with pytest.raises(ValueError, match="unknown model"):
        benchmark.build_model("vgg16")
    with pytest.raises(ValueError, match="unknown variant"):
        benchmark.variant_support("int8", "cpu")


# ------------------------------------------------------------------ runs and records


@pytest.fixture(scope="module")
def small_results() -> benchmark.Results:
    """A real (tiny) run: two small layers and MobileNetV2, batch 1."""
    skipped: list[benchmark.Skipped] = []
    layers = benchmark.layer_benchmarks(
        [benchmark.LayerCase("depthwise", 16, 8), benchmark.LayerCase("pointwise", 16, 8)],
        batch_size=1,
        variants=["fp32", "channels_last", "compile"],
        rounds=2,
        skipped=skipped,
    )
    models = benchmark.model_benchmarks(["mobilenet_v2"], batch_size=1, rounds=2, skipped=skipped)
    settings = benchmark.Settings("cpu", True, 1, 2, torch.get_num_threads())
    return benchmark.Results(
        xl.provenance.environment("cpu"),
        settings,
        tuple(models),
        tuple(layers),
        benchmark.roofline(matrix_size=256, copy_mib=4, rounds=2),
        tuple(skipped),
    )


def test_small_run_has_a_row_per_case(small_results: benchmark.Results) -> None:
    assert [(r.mode, r.variant) for r in small_results.models] == [("forward", "fp32"), ("train", "fp32")]
    assert [(r.kind, r.variant) for r in small_results.layers] == [
        ("depthwise", "fp32"),
        ("pointwise", "fp32"),
        ("depthwise", "channels_last"),
        ("pointwise", "channels_last"),
    ]
    for row in small_results.layers:
        assert row.gmacs_per_s == pytest.approx(row.macs / row.median_s / 1e9)
        assert row.runs == 2 and row.median_s == timing.Timing(row.times_s).median
    mobilenet_macs = cx.count_macs(benchmark.build_model("mobilenet_v2")[0], (1, 3, 224, 224))
    assert small_results.models[0].macs_per_image == mobilenet_macs
    assert benchmark.Skipped("layers/compile", benchmark.variant_support("compile", "cpu")) in small_results.skipped


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (lambda r: r.update(schema="other/0"), "schema"),
        (lambda r: r["environment"].pop("torch"), r"environment"),
        (lambda r: r["settings"].pop("threads"), r"settings: expected every required field"),
        (lambda r: r["settings"].update(quick="yes"), r"settings\.quick: expected true or false"),
        (lambda r: r["models"][0].update(median_s=-1.0), r"models\[0\]\.median_s: expected a finite number"),
        (lambda r: r["models"][0].update(median_s=float("nan")), r"models\[0\]\.median_s"),
        (lambda r: r["models"][0].update(mode="backward"), r"models\[0\]\.mode: expected one of"),
        (lambda r: r["models"][1].update(macs_per_image="3G"), r"models\[1\]\.macs_per_image: expected an integer"),
        (lambda r: r["layers"][1]["times_s"].pop(), r"layers\[1\]\.times_s: expected 2 times"),
        (lambda r: r["layers"][0].update(variant="int8"), r"layers\[0\]\.variant"),
        (lambda r: r["roofline"].update(bandwidth_gb_per_s=0), r"roofline\.bandwidth_gb_per_s"),
        (lambda r: r["roofline"].pop("compute_from"), r"roofline: expected every required field"),
        (lambda r: r.update(skipped=[{"what": "x"}]), r"skipped\[0\]: expected every required field"),
        (lambda r: r.update(layers={}), "layers: expected a list"),
        (lambda r: r.update(models=["not a row"]), r"models\[0\]: expected a JSON object"),
    ],
)
def test_from_dict_names_what_is_wrong(small_results: benchmark.Results, corrupt, message: str) -> None:
    broken = json.loads(json.dumps(small_results.to_dict()))
    corrupt(broken)
    with pytest.raises(ValueError, match="invalid benchmark results in some.json: " + message):
        benchmark.Results.from_dict(broken, where="some.json")
    with pytest.raises(ValueError, match="invalid benchmark results in results"):
        benchmark.validate_results(broken)


def test_save_load_round_trip_and_recorded(small_results: benchmark.Results, tmp_path: Path) -> None:
    benchmark.save(small_results, tmp_path / "bench_gpu_test.json")
    benchmark.save(small_results.to_dict(), tmp_path / "bench_cpu_other.json")  # a dict is checked, then written
    assert benchmark.load(tmp_path / "bench_gpu_test.json") == small_results  # typed rows again, tuples and all
    assert benchmark.recorded(directory=tmp_path) == [small_results]
    assert len(benchmark.recorded("bench_*.json", tmp_path)) == 2
    assert benchmark.recorded(directory=tmp_path / "absent") == []
    (tmp_path / "bench_gpu_broken.json").write_text(json.dumps({"schema": benchmark.SCHEMA}))
    with pytest.raises(ValueError, match="bench_gpu_broken.json"):
        benchmark.recorded(directory=tmp_path)  # the broken file is reported, not silently dropped
    (tmp_path / "bench_gpu_broken.json").write_text('{"schema": ')
    with pytest.raises(ValueError, match="cannot read benchmark results .*bench_gpu_broken.json"):
        benchmark.load(tmp_path / "bench_gpu_broken.json")


def test_save_is_atomic_a_failed_write_keeps_the_old_file(small_results, tmp_path: Path, monkeypatch) -> None:
    path = benchmark.save(small_results, tmp_path / "bench.json")
    before = path.read_text()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)  # the rename, the last step of every atomic write
    with pytest.raises(OSError, match="disk full"):
        benchmark.save(small_results, path)
    assert path.read_text() == before and benchmark.load(path) == small_results
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # no temporary file left behind
    with pytest.raises(ValueError, match="invalid benchmark results"):
        benchmark.save({"schema": "nonsense"}, path)  # checked before anything is written
    assert path.read_text() == before


def test_call_patterns_time_each_layer_both_ways_and_restore_the_threads() -> None:
    layers = {"a": torch.nn.Conv2d(4, 4, 3, padding=1), "b": torch.nn.Conv2d(4, 4, 1)}
    threads = torch.get_num_threads()
    out = benchmark.call_patterns(layers, torch.randn(1, 4, 8, 8), calls=3, rounds=2, budget_s=None, threads=1)
    assert set(out) == {"back to back", "one at a time"} and torch.get_num_threads() == threads
    assert all(set(ways) == {"a", "b"} for ways in out.values())
    assert [len(t.times) for t in out["back to back"].values()] == [2, 2]  # per call: a block's time / 3
    assert [len(t.times) for t in out["one at a time"].values()] == [6, 6]


def test_call_table_shows_both_ways_and_the_rate() -> None:
    t = timing.Timing((0.001, 0.002, 0.003))
    ways = {"back to back": {"a": t, "b": t}, "one at a time": {"a": t, "b": timing.Timing((0.004,))}}
    table = bench.call_table(ways, {"a": 2_000_000, "b": 4_000_000})
    assert list(table.index) == ["a", "b"] and table.loc["b", "M MACs"] == 4.0
    assert table.loc["a", "back to back, ms (IQR)"] == "2.000 (1.500-2.500)"
    assert table.loc["b", "GMAC/s"] == pytest.approx(4e6 / 0.002 / 1e9)
    assert table.loc["b", "one at a time, ms (IQR)"] == "4.000 (4.000-4.000)"


def test_a_budget_cuts_the_rounds_and_the_rows_say_how_many() -> None:
    rows = benchmark.layer_benchmarks(
        [benchmark.LayerCase("pointwise", 8, 8)], batch_size=1, rounds=1000, budget_s=0.05
    )
    assert 1 <= rows[0].runs < 1000 and len(rows[0].times_s) == rows[0].runs


def test_recorded_defaults_to_the_package_records(small_results: benchmark.Results, tmp_path, monkeypatch) -> None:
    assert benchmark.RECORDS == Path(xl.__file__).parent / "records"
    monkeypatch.setattr(benchmark, "RECORDS", tmp_path)
    benchmark.save(small_results, tmp_path / "bench_gpu_x.json")
    monkeypatch.chdir(tmp_path.parent)  # whatever the working directory
    assert benchmark.recorded() == [small_results]


def test_the_recorded_runs_load_and_fit_the_column() -> None:
    files = sorted(benchmark.RECORDS.glob("bench_*.json")) or sorted((ROOT / "book" / "results").glob("bench_*.json"))
    assert files, "expected the recorded benchmark runs"
    for path in files:
        results = benchmark.load(path)
        assert results.models and all(r.times_s for r in results.models)
        text = bench.format_results(results)
        assert max(len(line) for line in text.splitlines()) <= 88, path
        assert "commit None" not in text


def test_describe_says_when_there_is_no_commit(small_results: benchmark.Results) -> None:
    no_git = dataclasses.replace(small_results, environment=dataclasses.replace(small_results.environment, commit=None))
    assert "not a git checkout" in bench.describe(no_git)
    assert all(len(line) <= 88 for line in bench.describe(small_results).splitlines())


def test_unsupported_variants_are_skipped_with_a_reason() -> None:
    assert benchmark.variant_support("fp32", "cpu") is None
    assert benchmark.variant_support("channels_last", "cpu") is None
    assert "--compile" in benchmark.variant_support("compile", "cpu")
    assert benchmark.variant_support("compile", "cpu", compile=True) is None
    fp16_cpu = getattr(torch.ops.mkldnn, "_is_mkldnn_fp16_supported", lambda: False)()
    assert (benchmark.variant_support("fp16", "cpu") is None) == fp16_cpu


def test_speed_ratio_and_find(small_results: benchmark.Results) -> None:
    a = benchmark.ModelRow(
        **benchmark.Measured.of(timing.Timing((1.0, 1.0, 2.0))),
        model="a",
        label="A",
        mode="train",
        variant="fp32",
        batch_size=1,
        input_size=8,
        macs_per_image=None,
        images_per_s=1.0,
    )
    b = benchmark.ModelRow(**{**vars(a), **benchmark.Measured.of(timing.Timing((2.0, 2.0, 2.0))), "model": "b"})
    r = bench.speed_ratio(dataclasses.replace(small_results, models=(a, b)), "a", "b")
    assert (r.ratio, r.paired_median, r.paired_q1) == (2.0, 2.0, 1.5)
    with pytest.raises(ValueError, match="exactly one row"):
        bench.find([a, b], model="c")


def test_benchmarks_check_their_arguments() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        benchmark.model_benchmarks(["vgg16"])
    with pytest.raises(ValueError, match="variant_models must be some of"):
        benchmark.model_benchmarks(["mobilenet_v2"], variant_models=["resnet50"])
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1"):
        benchmark.layer_benchmarks(batch_size=0)
    with pytest.raises(ValueError, match="unknown variant"):
        benchmark.layer_benchmarks(variants=["fp8"])
    with pytest.raises(ValueError, match="rounds must be a whole number"):
        benchmark.run(rounds=0)
    with pytest.raises(ValueError, match="not a device"):
        benchmark.check_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="not available on this machine"):
            benchmark.check_device("cuda")


def test_tables_and_plots_fit_the_column(small_results: benchmark.Results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    text = bench.format_results(small_results)
    assert "MobileNetV2" in text and "depthwise 16@8x8" in text and "skipped layers/compile" in text
    assert max(len(line) for line in text.splitlines()) <= 88
    ax = bench.plot_roofline(small_results)
    assert len(ax.collections) == 2  # one point per fp32 layer
    axes = bench.plot_models(small_results)
    assert [len(a.collections) for a in axes] == [1, 1]
    variants = bench.plot_variants(small_results)
    assert len(variants[0].patches) == 2  # channels_last bars for the two layers; no model variants here
    for fig in (ax.figure, axes[0].figure, variants[0].figure):
        assert fig.get_figwidth() <= 7.5
        sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip()]
        assert sizes and min(sizes) >= 9


def test_separable_shares_and_variant_speedups(small_results: benchmark.Results) -> None:
    shares = bench.separable_shares(small_results)
    assert list(shares.index) == ["16@8x8"]
    assert shares.mac_share.iloc[0] == pytest.approx(9 / (9 + 16))  # 9 C HW against C^2 HW, C = 16
    dw = bench.find(small_results.layers, kind="depthwise", variant="fp32")
    pw = bench.find(small_results.layers, kind="pointwise", variant="fp32")
    assert shares.time_share.iloc[0] == pytest.approx(dw.median_s / (dw.median_s + pw.median_s))
    speedups = bench.variant_speedups(small_results)
    assert list(zip(speedups.case, speedups.variant, strict=True)) == [
        ("depthwise 16@8", "channels_last"),
        ("pointwise 16@8", "channels_last"),
    ]
    cl = bench.find(small_results.layers, kind="depthwise", variant="channels_last")
    assert speedups.speedup.iloc[0] == pytest.approx(dw.median_s / cl.median_s)


def test_format_results_filters_variants(small_results: benchmark.Results) -> None:
    text = bench.format_results(small_results, ["layers"], variants=["fp32"], header=False)
    assert "channels_last" not in text and text.count("16@8x8") == 2
    with pytest.raises(ValueError, match="unknown section"):
        bench.format_results(small_results, ["gpu"])


# ------------------------------------------------------------------ command line


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
        (["--rounds", "two"], "--rounds: expected a int, got 'two'"),
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
