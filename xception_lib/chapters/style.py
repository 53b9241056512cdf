"""The book's one look for figures: one colour per model and per layer kind, sizes for the column, SVG.

Every chapter calls :func:`use` once, after its imports; every figure takes its colours from
:data:`MODELS` and :data:`LAYERS` (through :func:`colour`), so that Xception is the same blue in
chapter 3 and chapter 8, and a depthwise step the same orange in chapter 1 and chapter 8.
The colours are Okabe and Ito's palette, told apart with the common colour-vision deficiencies.
"""

from __future__ import annotations

COLUMN_IN = 7.0
"""A figure this many inches wide fills the book's text column (690 px) at full size."""

MODELS: dict[str, str] = {
    "xception": "#0072B2",  # blue: the book's subject
    "xception_timm_port": "#56B4E9",  # sky blue: the same network, the PyTorch port's conventions
    "timm_legacy_xception": "#56B4E9",
    "inception_v3": "#E69F00",  # orange: the network Xception is compared with
    "resnet50": "#009E73",  # green
    "resnet18": "#009E73",
    "mobilenet_v2": "#CC79A7",  # purple: another separable-convolution network
    "vgg16": "#999999",
}
"""One colour per model, across the whole book (keys as in the benchmarks)."""

LAYERS: dict[str, str] = {
    "depthwise": "#E69F00",  # orange: the spatial step
    "pointwise": "#0072B2",  # blue: the cross-channel step
    "regular": "#CC79A7",  # purple: a regular convolution, both at once
    "pool": "#999999",
    "norm": "#F0E442",
    "other": "#D9D9D9",
}
"""One colour per kind of layer, across the whole book."""


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())  # "ResNet-50", "Inception V3": resnet50, inceptionv3


_COLOURS = {_key(name): colour for name, colour in (MODELS | LAYERS).items()}


def colour(name: str, default: str | None = None) -> str:
    """The book's colour for a model ("ResNet-50" is ``resnet50``) or a layer kind, else ``default``; without
    one, a ``KeyError`` lists the names that have a colour."""
    found = _COLOURS.get(_key(name), default)
    if found is None:
        raise KeyError(f"no colour for {name!r}: models {sorted(MODELS)}, layer kinds {sorted(LAYERS)}")
    return found


def use(svg: bool = True) -> None:
    """Set matplotlib up for the book, once after a chapter's imports: text sizes readable in the column, a white
    ground, and, inside IPython or Jupyter, figures as SVG (sharp at any zoom) unless ``svg=False``."""
    import matplotlib as mpl

    mpl.rcParams.update(
        {
            "font.size": 11,
            "axes.titlesize": 12,
            "axes.labelsize": 11,
            "xtick.labelsize": 10,
            "ytick.labelsize": 10,
            "legend.fontsize": 10,
            "figure.facecolor": "white",
            "savefig.facecolor": "white",
            "svg.fonttype": "path",  # the text looks the same without the fonts installed
        }
    )
    if svg:
        try:
            from IPython import get_ipython
            from matplotlib_inline.backend_inline import set_matplotlib_formats
        except ImportError:
            return
        if get_ipython() is not None:
            set_matplotlib_formats("svg")
