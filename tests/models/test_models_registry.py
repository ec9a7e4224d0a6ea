"""Registry: every catalog name builds, lookups, error messages, Azure's per-model defaults."""

from __future__ import annotations

import pytest
import torch

from visionauto.errors import ModelError
from visionauto.models import MODELS, ModelSpec, create_model, get_model_spec, model_defaults
from visionauto.models.registry import build_table

# Catalog names and the timm model each must build (spec §1.5, stack-facts §8).
EXPECTED_BUILDERS = {
    "mobilenetv2": "mobilenetv2_100",
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "resnet101": "resnet101",
    "resnet152": "resnet152",
    "resnest50": "resnest50d",
    "resnest101": "resnest101e",
    "seresnext": "seresnext50_32x4d",
    "vits16r224": "vit_small_patch16_224",
    "vitb16r224": "vit_base_patch16_224",
    "vitl16r224": "vit_large_patch16_224",
    "efficientnet_lite0": "tf_efficientnet_lite0",
}
# ViT-B/L take 4-20 s to initialise on 2 cores: they are built on the meta device (real module
# tree and shapes, no memory, no init), every other model is built and run for real.
META_BUILT = {"vitb16r224", "vitl16r224"}


def test_catalog_is_exactly_azure_list_plus_lite0() -> None:
    classifiers = {name: spec for name, spec in MODELS.items() if spec.source == "timm"}
    assert {name: spec.builder_name for name, spec in classifiers.items()} == EXPECTED_BUILDERS
    for spec in classifiers.values():
        assert spec.tasks == ("classification", "multilabel")
        assert spec.image_size == 224


@pytest.mark.parametrize("name", sorted(set(EXPECTED_BUILDERS) - META_BUILT))
def test_catalog_model_builds_and_gives_logits(name: str) -> None:
    """Both tasks build the same network (the task picks the loss), so one task suffices."""
    torch.manual_seed(0)
    # ViT-S has a fixed position embedding: ask timm for a 32 px variant (kwargs pass through).
    kwargs = {"img_size": 32} if name.startswith("vit") else {}
    model = create_model("classification", name, num_classes=3, pretrained=False, **kwargs).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 3)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(("name", "min_params"), [("vitb16r224", 85e6), ("vitl16r224", 300e6)])
def test_large_vits_build_on_meta_device(name: str, min_params: float) -> None:
    with torch.device("meta"):
        model = create_model("classification", name, num_classes=7)
        logits = model(torch.empty(2, 3, 224, 224))
    assert logits.shape == (2, 7)
    assert sum(p.numel() for p in model.parameters()) > min_params


def test_none_kwargs_are_dropped() -> None:
    model = create_model("classification", "resnet18", num_classes=2, drop_rate=None)
    assert model.fc.out_features == 2


def test_unknown_name_lists_close_matches_and_timm_hint() -> None:
    with pytest.raises(
        ModelError,
        match=r"Unknown model name 'seresnet'\. Did you mean: "
        r"seresnext.*model=timm model\.name=<timm name>",
    ):
        get_model_spec("seresnet")


def test_unknown_name_suggests_timm_names_too() -> None:
    with pytest.raises(ModelError, match=r"Did you mean: .*convnext_tiny"):
        get_model_spec("convnext_tiniy")


def test_any_timm_name_is_a_generic_classifier() -> None:
    spec = get_model_spec("resnet10t", "multilabel")
    assert spec == ModelSpec(
        "resnet10t", "timm", ("classification", "multilabel"), "resnet10t", "resnet", 176
    )
    model = create_model("multilabel", "resnet10t", num_classes=4).eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 4)


def test_generic_timm_layer_groups_inferred_only_when_known() -> None:
    assert get_model_spec("efficientnet_b0").layer_groups == "efficientnet"
    assert get_model_spec("vit_tiny_patch16_224").layer_groups == "vit"
    assert get_model_spec("convnext_tiny").layer_groups is None


def test_model_not_valid_for_task() -> None:
    with pytest.raises(
        ModelError,
        match=r"Model 'seresnext' cannot be used for task=detection: "
        r"it supports classification, multilabel\.",
    ):
        create_model("detection", "seresnext", num_classes=3)


def test_num_classes_must_be_positive() -> None:
    with pytest.raises(ModelError, match=r"num_classes=0 for model 'resnet18'"):
        create_model("classification", "resnet18", num_classes=0)


def test_duplicate_name_raises() -> None:
    spec = MODELS["resnet18"]
    with pytest.raises(ValueError, match="duplicate model name 'resnet18'"):
        build_table([spec, MODELS["resnet34"], spec])


@pytest.mark.parametrize(
    ("task", "name", "expected"),
    [
        ("classification", "seresnext", (15, 78, 78, 0.01)),
        ("multilabel", "seresnext", (15, 78, 78, 0.035)),
        ("classification", "efficientnet_lite0", (15, 78, 78, 0.01)),
        ("classification", "vits16r224", (15, 128, 128, 0.0125)),
        ("multilabel", "vits16r224", (15, 128, 128, 0.025)),
        ("classification", "vitb16r224", (15, 48, 48, 0.0125)),
        ("multilabel", "vitb16r224", (15, 48, 48, 0.025)),
        ("classification", "vitl16r224", (15, 10, 10, 0.001)),
        ("multilabel", "vitl16r224", (15, 10, 10, 0.002)),
        # A timm name of the same architecture gets the same defaults as the Azure name.
        ("classification", "vit_base_patch16_224", (15, 48, 48, 0.0125)),
    ],
)
def test_model_defaults(task: str, name: str, expected: tuple[float, ...]) -> None:
    keys = ("number_of_epochs", "training_batch_size", "validation_batch_size", "learning_rate")
    assert model_defaults(task, name) == dict(zip(keys, expected, strict=True))
