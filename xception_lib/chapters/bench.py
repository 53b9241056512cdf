"""Chapter 8's reading of benchmark results (:class:`~xception_lib.benchmark.Results`, measured by
:mod:`xception_lib.benchmark`, ``python -m xception_lib.chapters bench``): tables, ratios, shares and figures."""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, NamedTuple

from xception_lib.benchmark import MODEL_NAMES, MODES, VARIANTS, LayerRow, ModelRow, Results
from xception_lib.chapters import style
from xception_lib.provenance import expect
from xception_lib.timing import Timing

if TYPE_CHECKING:
    import pandas

SECTIONS = ("models", "layers", "roofline", "skipped")  # of a printed report
WIDTH = 80  # characters per line of printed text that the book's column shows without scrolling


# ------------------------------------------------------------------ reading results
def find(rows: Sequence[Any], **match: Any) -> Any:
    """The one row whose fields equal ``match`` (``ValueError`` if none or several)."""
    hits = [r for r in rows if all(getattr(r, k, None) == v for k, v in match.items())]
    expect(len(hits) == 1, f"rows with {match}", "exactly one", len(hits))
    return hits[0]


class Ratio(NamedTuple):
    """How many times faster a model is than a baseline (> 1: faster)."""

    ratio: float  # of the median times
    paired_median: float  # of the round-by-round ratios of the interleaved runs, and their quartiles
    paired_q1: float
    paired_q3: float


def speed_ratio(results: Results, model: str = "xception", *, mode: str = "train") -> Ratio:
    """Throughput of ``model`` divided by timm's legacy_xception's in fp32, from the same interleaved run: the ratio
    of the medians, and the ratios round by round (of runs moments apart)."""
    a, b = (find(results.models, model=m, mode=mode, variant="fp32") for m in (model, "timm_legacy_xception"))
    paired = Timing(tuple(tb / ta for ta, tb in zip(a.times_s, b.times_s, strict=True)))
    return Ratio(b.median_s / a.median_s, paired.median, *paired.quartiles)


def describe(results: Results) -> str:
    """Two lines saying where, when and how ``results`` were measured."""
    env, s = results.environment, results.settings
    commit = f"commit {env.commit[:8]}" if env.commit else "not a git checkout (no commit)"
    commit += " (corrected after the run, see commit_note)" * bool(env.commit_note)
    threads = f"{s.threads} thread{'s' * (s.threads != 1)}"
    when = env.date[:16].replace("T", " ")  # to the minute, in the recorded time zone (UTC)
    return f"{env.device_name}, torch {env.torch}, {threads}, batch {s.batch_size}, {s.rounds} rounds\n{commit}, {when}"


def _frame(rows: Sequence[ModelRow | LayerRow], variants: Sequence[str] | None) -> pandas.DataFrame:
    """The fields of ``rows`` (of ``variants``, if given), with ``ms`` (the median) and ``spread`` (IQR / median)."""
    import pandas as pd

    df = pd.DataFrame([asdict(r) for r in rows if variants is None or r.variant in variants])
    expect(not df.empty, "table", f"rows of the variants {variants}", "none")
    return df.assign(ms=df.median_s * 1e3, spread=(df.iqr_s / df.median_s).map("{:.0%}".format))


def model_table(rows: Sequence[ModelRow], variants: Sequence[str] | None = None) -> pandas.DataFrame:
    """One line per model row: MACs, median ms, spread (IQR / median) and images per second."""
    df = _frame(rows, variants).rename(columns={"input_size": "px", "images_per_s": "img/s"})
    df["GMACs"] = (df.macs_per_image.astype(float) / 1e9).round(2)
    columns = ["variant", "mode", "px", "GMACs", "ms", "spread", "img/s"]
    return df.round({"ms": 1, "img/s": 1}).set_index("label").rename_axis("model")[columns]


def layer_table(rows: Sequence[LayerRow], variants: Sequence[str] | None = None) -> pandas.DataFrame:
    """One line per layer row: MACs, intensity, median ms, spread and achieved GMAC/s."""
    df = _frame(rows, variants).rename(columns={"batch_size": "batch", "intensity": "MACs/B", "gmacs_per_s": "GMAC/s"})
    size = df["size"].astype(str)
    df["layer"], df["MMACs"] = df.kind + " " + df.channels.astype(str) + "@" + size + "x" + size, df.macs / 1e6
    columns = ["variant", "batch", "MMACs", "MACs/B", "ms", "spread", "GMAC/s"]
    return df.round({"MMACs": 1, "MACs/B": 1, "ms": 3, "GMAC/s": 1}).set_index("layer")[columns]


def ratio_table(results: Results, models: Sequence[str] = ("xception", "xception_timm_port")) -> pandas.DataFrame:
    """Each measured model's speed over timm's legacy_xception per mode: ratio of medians, paired median, IQR."""
    import pandas as pd

    measured = {(r.model, r.mode) for r in results.models if r.variant == "fp32"}
    keys = [(m, mode) for m in models for mode in MODES if (m, mode) in measured]
    df = pd.DataFrame([speed_ratio(results, m, mode=mode) for m, mode in keys], columns=Ratio._fields)
    iqr = df.paired_q1.map("{:.3f}".format) + " to " + df.paired_q3.map("{:.3f}".format)
    df = df.round(3).assign(model=[m for m, _ in keys], mode=[mode for _, mode in keys], IQR=iqr)
    return df.rename(columns={"paired_median": "paired"}).set_index("model")[["mode", "ratio", "paired", "IQR"]]


def format_results(results: Results, sections: Sequence[str] = SECTIONS, *, header: bool = True) -> str:
    """A plain-text report of ``sections``, its prose wrapped to the book's column (the chapters show tables as
    HTML); ``header``: :func:`describe` and titles."""
    expect(set(sections) <= set(SECTIONS), "sections", f"some of {SECTIONS}", sections)
    out, roof = [describe(results)] if header else [], results.roofline
    wrap = functools.partial(textwrap.fill, width=WIDTH, subsequent_indent="    ")
    for section in sections:
        if section == "models" and results.models:
            out += ["", "Models (median of interleaved rounds; spread = IQR / median)"] * header
            out.append(model_table(results.models).to_string())
            ratios = ratio_table(results)
            if not ratios.empty:
                out += ["", "throughput / timm legacy_xception (paired: round by round)", ratios.to_string()]
        if section == "layers" and results.layers:
            out += ["", "Layers (forward, inference mode)"] * header + [layer_table(results.layers).to_string()]
        if section == "roofline" and roof is not None:
            out += [""] * header + [
                wrap(f"roofline: peak {roof.peak_gmacs_per_s:,.1f} GMAC/s ({roof.compute_from})"),
                wrap(f"bandwidth {roof.bandwidth_gb_per_s:,.1f} GB/s ({roof.bandwidth_from})"),
                f"ridge point at {roof.ridge_intensity:.1f} MACs per byte",
            ]
        if section == "skipped":
            out += [wrap(f"skipped {item.what}: {item.reason}") for item in results.skipped]
    return "\n".join(out).strip("\n")


def call_table(ways: dict[str, dict[str, Timing]], macs: dict[str, int]) -> pandas.DataFrame:
    """:func:`xception_lib.benchmark.call_patterns`' timings beside each layer's MACs (chapters 2 and 8):
    milliseconds per call, median (IQR, 3 significant digits), both ways, and the GMAC/s of the back-to-back median."""
    import pandas as pd

    def ms(t: Timing) -> str:
        return "{:.3g} ({:.3g}-{:.3g})".format(*(1e3 * s for s in (t.median, *t.quartiles)))

    hot, cold = ways["back to back"], ways["one at a time"]
    return pd.DataFrame(
        {
            "M MACs": {n: macs[n] / 1e6 for n in hot},
            "back to back, ms": {n: ms(t) for n, t in hot.items()},
            "GMAC/s": {n: macs[n] / t.median / 1e9 for n, t in hot.items()},
            "one at a time, ms": {n: ms(t) for n, t in cold.items()},
        }
    )


def separable_shares(results: Results) -> pandas.DataFrame:
    """The depthwise 3x3's share of a separable convolution's (depthwise, then pointwise) MACs and time, by shape."""
    import pandas as pd

    rows = []
    for dw in (r for r in results.layers if r.kind == "depthwise" and r.variant == "fp32"):
        pw = find(results.layers, kind="pointwise", channels=dw.channels, size=dw.size, variant="fp32")
        shares = {"mac_share": dw.macs / (dw.macs + pw.macs), "time_share": dw.median_s / (dw.median_s + pw.median_s)}
        rows.append({"shape": f"{dw.channels}@{dw.size}x{dw.size}", **shares})
    return pd.DataFrame(rows, columns=["shape", "mac_share", "time_share"]).set_index("shape")


def variant_speedups(results: Results) -> pandas.DataFrame:
    """Speed-up of every non-fp32 row over the fp32 row of the same case (> 1: faster)."""
    import pandas as pd

    rows = []
    for section, keys in (("layers", ("kind", "channels", "size")), ("models", ("model", "mode"))):
        for r in (r for r in getattr(results, section) if r.variant != "fp32"):
            base = find(getattr(results, section), variant="fp32", **{k: getattr(r, k) for k in (*keys, "batch_size")})
            case = f"{r.kind} {r.channels}@{r.size}" if section == "layers" else f"{r.label}, {r.mode}"
            rows.append((section, case, r.variant, base.median_s / r.median_s))
    return pd.DataFrame(rows, columns=["section", "case", "variant", "speedup"])


# ------------------------------------------------------------------ plots (7 in wide, text >= 9 pt)
MODEL_MARKERS = dict(zip(MODEL_NAMES, "os^DvP", strict=True))  # the two timm-style networks share a colour
#: A colour per variant, from the book's palette (``style``), and a marker, for the speed-up dot plot.
VARIANT_STYLES = {
    "channels_last": (style.colour("resnet50"), "o"),
    "bf16": (style.colour("inception_v3"), "s"),
    "fp16": (style.colour("mobilenet_v2"), "D"),
    "compile": (style.colour("vgg16"), "^"),
}
POINT: dict[str, Any] = {"edgecolor": "k", "linewidth": 0.5, "zorder": 3}


def _labels(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel, fontsize=10)
    ax.set_ylabel(ylabel, fontsize=10)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=9)


def plot_roofline(results: Results) -> Any:
    """Achieved GMAC/s of the fp32 layers against their MACs per byte (log-log) under the roofs."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    roof, rows = results.roofline, [r for r in results.layers if r.variant == "fp32"]
    if not rows or roof is None:
        raise ValueError("expected fp32 layer rows and a roofline measurement")
    ax = plt.subplots(figsize=(7, 4.4))[1]
    lo, hi = min(r.intensity for r in rows) / 2, max(max(r.intensity for r in rows) * 2, roof.ridge_intensity * 4)
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(xs, [min(roof.peak_gmacs_per_s, x * roof.bandwidth_gb_per_s) for x in xs], "k-", lw=1.5)
    markers = dict(zip(dict.fromkeys((r.channels, r.size) for r in rows), "o^sDv", strict=False))
    for r in rows:
        ax.scatter(
            r.intensity, r.gmacs_per_s, s=60, c=style.colour(r.kind), marker=markers[r.channels, r.size], **POINT
        )
    handles = [Line2D([], [], color="k", label="roofline")]
    kinds = dict.fromkeys(r.kind for r in rows)
    handles += [Line2D([], [], ls="", marker="o", color=style.colour(k), label=k) for k in kinds]
    handles += [Line2D([], [], ls="", marker=m, color="grey", label=f"{c}@{s}") for (c, s), m in markers.items()]
    ax.legend(handles=handles, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4)
    ax.set(xscale="log", yscale="log")
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers (1, 2, 5, 10, ...), not 2 x 10^1
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,g}"))
        axis.set_minor_formatter(NullFormatter())
    title = f"{results.environment.device_name}, batch {rows[0].batch_size}"
    _labels(ax, "arithmetic intensity (MACs per byte, fp32)", "achieved GMAC/s", title)
    return ax


def plot_models(results: Results, modes: Sequence[str] = MODES) -> Any:
    """Measured time per image against MACs per image in fp32, one point per model, a panel per mode."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(modes), figsize=(7, 3.4), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        rows = [r for r in results.models if r.mode == mode and r.variant == "fp32" and r.macs_per_image]
        expect(bool(rows), f"mode {mode!r}", "fp32 model rows with MACs", len(rows))
        for r in rows:
            x, y, colour = (r.macs_per_image or 0) / 1e9, 1e3 / r.images_per_s, style.colour(r.model)
            ax.scatter(x, y, s=50, label=r.label, color=colour, marker=MODEL_MARKERS[r.model], **POINT)
        ax.set(xlim=(0, None), ylim=(0, None))
        _labels(ax, "GMACs per image", "ms per image (median)", f"{mode}, batch {rows[0].batch_size}")
    handles = axes[0][0].get_legend_handles_labels()
    fig.legend(*handles, fontsize=9, loc="upper center", ncol=3, bbox_to_anchor=(0.5, 0.02))
    fig.suptitle(f"{results.environment.device_name}, fp32", fontsize=10)
    fig.tight_layout()
    return axes[0]


def plot_variants(results: Results) -> Any:
    """Speed-up over fp32 of every other variant, layers and models (a panel each, if measured): a dot plot, log x."""
    import matplotlib.pyplot as plt

    speedups = variant_speedups(results)
    expect(not speedups.empty, "results", "rows of a variant other than fp32", "none")
    parts = [(s, speedups[speedups.section == s]) for s in ("layers", "models") if (speedups.section == s).any()]
    counts = [part.case.nunique() for _, part in parts]
    variants = [v for v in VARIANTS if v in set(speedups.variant)]
    size, heights = (7, 1.8 + 0.32 * sum(counts)), [c + 1 for c in counts]  # a one-row panel still has room
    fig, axes = plt.subplots(len(parts), 1, figsize=size, squeeze=False, sharex=True, height_ratios=heights)
    for ax, (section, part) in zip(axes[:, 0], parts, strict=True):
        cases = list(dict.fromkeys(part.case))  # in the measured order, top to bottom
        for j, variant in enumerate(variants):
            rows = part[part.variant == variant]
            offset = 0.18 * (j - (len(variants) - 1) / 2)  # variants side by side within a case's row
            y = [cases.index(c) + offset for c in rows.case]
            colour, marker = VARIANT_STYLES[variant]
            ax.scatter(rows.speedup, y, s=36, color=colour, marker=marker, label=variant, **POINT)
        ax.axvline(1.0, color="k", lw=1)
        ax.set(yticks=range(len(cases)), yticklabels=cases, ylim=(len(cases) - 0.5, -0.5), xscale="log")
        ax.grid(axis="x", which="major", alpha=0.3)
        ax.grid(axis="y", alpha=0.15)
        _labels(ax, "", "", section)
    lo, hi = axes[0, 0].get_xlim()
    ticks = (0.1, 0.2, 0.5, 1, 2, 5, 10) if hi / lo > 6 else (0.5, 0.7, 0.8, 0.9, 1, 1.25, 1.5, 2, 2.5, 3)
    axes[-1, 0].set_xticks([t for t in ticks if lo <= t <= hi], [f"{t:g}" for t in ticks if lo <= t <= hi])
    axes[-1, 0].set_xticks([], minor=True)
    axes[-1, 0].set_xlabel("speed-up over fp32 (x, log scale; right of 1: faster)", fontsize=10)
    fig.suptitle(results.environment.device_name, fontsize=10)
    fig.tight_layout()
    handles = axes[0, 0].get_legend_handles_labels()  # every variant is in the first panel
    fig.legend(*handles, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=4)
    return axes[:, 0]
