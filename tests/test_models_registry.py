"""Registration of the built-in model components and build_model from a spec."""

from __future__ import annotations

import pytest

from qsight.components import BACKBONES, HEADS
from qsight.config.spec import ModelSpec, ensure_ready
from qsight.errors import BadInputError
from tests.helpers import heavy_imports


def test_import_is_light() -> None:
    assert heavy_imports("qsight.models", ("torch", "timm")) == []


def test_builtins_registered() -> None:
    import qsight.models  # noqa: F401

    assert {"timm", "tiny-cnn"} <= set(BACKBONES.names())
    assert {"linear", "mlp"} <= set(HEADS.names())
    assert BACKBONES.get("timm").params.model_fields["pretrained"].default is False


def _spec(**model: object) -> ModelSpec:
    ensure_ready()
    base: dict[str, object] = {
        "backbone": {"type": "tiny-cnn", "width": 4, "depth": 1},
        "heads": {"a": {"type": "linear"}, "b": {"type": "mlp", "input": "neck", "hidden": 4}},
    }
    return ModelSpec.model_validate({**base, **model})


def test_build_model_from_spec() -> None:
    from qsight.models import GatedCombiner, HybridModel, build_model

    model = build_model(_spec(neck={"dim": 3}), num_classes=5)
    assert isinstance(model, HybridModel) and isinstance(model.combiner, GatedCombiner)
    assert model.module_names() == ["backbone", "neck", "heads.a", "heads.b", "combiner"]
    assert model.head_inputs == {"a": "backbone", "b": "neck"}
    assert model.heads["b"].body[0].in_features == 3  # type: ignore[index,union-attr]


def test_build_model_errors() -> None:
    from qsight.models import build_model

    with pytest.raises(BadInputError, match=r"model\.heads\.b: reads 'neck'"):
        build_model(_spec(neck=None), num_classes=5)
    with pytest.raises(BadInputError, match="at least 2 classes"):
        build_model(_spec(), num_classes=1)


@pytest.mark.parametrize("name", ["keys", "training"])
def test_reserved_head_names(name: str) -> None:
    from qsight.models import build_model

    with pytest.raises(BadInputError, match="reserved"):
        build_model(_spec(neck=None, heads={name: {"type": "linear"}}), num_classes=3)
