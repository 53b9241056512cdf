"""Chapter 8's reading of benchmark results (``xception_lib.chapters.bench``): ratios, tables, shares and
figures, on results with made-up times (the measurements themselves: ``test_benchmark.py``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import xception_lib as xl
from xception_lib import benchmark, timing
from xception_lib.chapters import bench, style

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_results() -> benchmark.Results:
    """Two layers (fp32 and channels_last, 16@8x8) and MobileNetV2 in both modes, with made-up times."""

    layers = []
    for variant, scale in (("fp32", 1.0), ("channels_last", 0.5)):
        for kind, seconds in (("depthwise", 1e-4), ("pointwise", 2e-4)):
            case, t = benchmark.LayerCase(kind, 16, 8), timing.Timing((seconds * scale, 1.5 * seconds * scale))
            macs, traffic = case.macs(1), case.bytes_moved(1)
            rate = macs / t.median / 1e9
            layers.append(benchmark.LayerRow.of(t, kind, 16, 8, variant, 1, macs, traffic, macs / traffic, rate))
    models = [
        benchmark.ModelRow.of(
            timing.Timing((0.05, 0.06)), "mobilenet_v2", "MobileNetV2", mode, "fp32", 1, 224, 300_000_000, 1 / 0.055
        )
        for mode in benchmark.MODES
    ]
    settings = benchmark.Settings("cpu", True, 1, 2, 1)
    roof = benchmark.Roofline(50.0, 10.0, 5.0, "fp32 matmul 256x256x256, median of 2", "copy of 4 MiB")
    skipped = (benchmark.Skipped("layers/compile", "not requested (pass --compile)"),)
    return benchmark.Results(xl.provenance.environment("cpu"), settings, tuple(models), tuple(layers), roof, skipped)


def _pair(times_a: tuple[float, ...], times_b: tuple[float, ...]) -> tuple[benchmark.ModelRow, ...]:
    return tuple(
        benchmark.ModelRow.of(timing.Timing(times), name, name, "train", "fp32", 1, 8, None, 1.0)
        for name, times in (("a", times_a), ("timm_legacy_xception", times_b))
    )


def test_speed_ratio_is_round_by_round_and_find(small_results: benchmark.Results) -> None:
    r = bench.speed_ratio(dataclasses.replace(small_results, models=_pair((1.0, 1.0, 2.0), (2.0, 2.0, 2.0))), "a")
    assert (r.ratio, r.paired_median, r.paired_q1) == (2.0, 2.0, 1.5)
    # B takes twice A's time in every round, even though both drift by 4x.
    drift = dataclasses.replace(small_results, models=_pair((1.0, 2.0, 4.0), (2.0, 4.0, 8.0)))
    assert bench.speed_ratio(drift, "a") == bench.Ratio(2.0, 2.0, 2.0, 2.0)
    spread = bench.speed_ratio(dataclasses.replace(small_results, models=_pair((1.0,) * 4, (1.0, 2.0, 3.0, 4.0))), "a")
    assert spread.paired_median == 2.5 and (spread.paired_q1, spread.paired_q3) == pytest.approx((1.75, 3.25))
    with pytest.raises(ValueError, match=r"rows with \{'model': 'c'\}: expected exactly one, got 0"):
        bench.find(small_results.models, model="c")


def test_describe_says_when_there_is_no_commit(small_results: benchmark.Results) -> None:
    no_git = dataclasses.replace(small_results, environment=dataclasses.replace(small_results.environment, commit=None))
    assert "not a git checkout" in bench.describe(no_git)
    assert all(len(line) <= bench.WIDTH for line in bench.describe(small_results).splitlines())


def test_call_table_shows_both_ways_and_the_rate() -> None:
    t = timing.Timing((0.001, 0.002, 0.003))
    ways = {"back to back": {"a": t, "b": t}, "one at a time": {"a": t, "b": timing.Timing((0.004,))}}
    table = bench.call_table(ways, {"a": 2_000_000, "b": 4_000_000})
    assert list(table.index) == ["a", "b"] and table.loc["b", "M MACs"] == 4.0
    assert table.loc["a", "back to back, ms"] == "2 (1.5-2.5)"
    assert table.loc["b", "GMAC/s"] == pytest.approx(4e6 / 0.002 / 1e9)
    assert table.loc["b", "one at a time, ms"] == "4 (4-4)"


def test_the_recorded_runs_load_and_fit_the_column() -> None:
    files = sorted(benchmark.RECORDS.glob("bench_*.json")) or sorted((ROOT / "book" / "results").glob("bench_*.json"))
    assert files, "expected the recorded benchmark runs"
    for path in files:
        results = benchmark.load(path)
        assert results.models and all(r.times_s for r in results.models)
        text = bench.format_results(results)
        prose = bench.format_results(results, ["roofline", "skipped"])  # the tables are shown as HTML
        assert max(len(line) for line in prose.splitlines()) <= bench.WIDTH, path
        assert "commit None" not in text


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
    model = small_results.models[0].model  # the book's colour for the model, on every device's figure
    assert matplotlib.colors.same_color(axes[0].collections[0].get_facecolor()[0], style.colour(model))
    variants = bench.plot_variants(small_results)
    points = variants[0].collections[0].get_offsets()
    assert len(points) == 2  # channels_last dots for the two layers; no model variants here
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


def test_format_results_and_tables_filter(small_results: benchmark.Results) -> None:
    text = bench.format_results(small_results, ["layers"], header=False)
    assert "Layers" not in text and text.count("16@8x8") == 4
    assert list(bench.layer_table(small_results.layers, ["fp32"]).variant) == ["fp32", "fp32"]
    with pytest.raises(ValueError, match=r"sections: expected some of \('models', .*got \['gpu'\]"):
        bench.format_results(small_results, ["gpu"])
