"""The book's one palette and figure settings."""

from __future__ import annotations

import pytest

from xception_lib.chapters import style


def test_every_model_and_layer_kind_has_one_colour() -> None:
    assert style.colour("Xception") == style.MODELS["xception"]
    assert style.colour("inception-v3") == style.MODELS["inception_v3"]
    assert style.colour("depthwise") == style.LAYERS["depthwise"]
    # the two steps of a separable convolution are told apart
    assert style.colour("depthwise") != style.colour("pointwise")
    assert len({c.lower() for c in style.LAYERS.values()}) == len(style.LAYERS)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="resnet50"):
        style.colour("alexnet")


def test_use_sets_readable_sizes_and_a_white_ground() -> None:
    mpl = pytest.importorskip("matplotlib")
    with mpl.rc_context():
        mpl.rcParams["font.size"] = 6
        style.use(svg=False)
        assert mpl.rcParams["font.size"] >= 10
        assert mpl.rcParams["savefig.facecolor"] == "white"
