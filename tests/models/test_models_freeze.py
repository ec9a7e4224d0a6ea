"""layers_to_freeze: Azure's layer groups mapped onto timm module names (spec §1.7)."""

from __future__ import annotations

import pytest
import torch

from visionauto.errors import ConfigError
from visionauto.models import create_model, get_model_spec
from visionauto.models.freeze import LAYER_GROUPS, freeze_layers


def _frozen_top_modules(model: torch.nn.Module) -> set[str]:
    return {name.split(".")[0] for name, p in model.named_parameters() if not p.requires_grad}


def test_resnet18_two_groups_freeze_stem_and_layer1_exactly() -> None:
    model = create_model("classification", "resnet18", num_classes=3)
    frozen = freeze_layers(model, get_model_spec("resnet18").layer_groups, 2)
    assert frozen == ["conv1.", "bn1.", "layer1."]
    assert _frozen_top_modules(model) == {"conv1", "bn1", "layer1"}
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4", "fc"}


def test_zero_freezes_nothing() -> None:
    model = create_model("classification", "resnet18", num_classes=3)
    assert freeze_layers(model, "resnet", 0) == []
    assert all(p.requires_grad for p in model.parameters())


def test_all_resnet_groups_leave_only_the_head() -> None:
    model = create_model("classification", "resnet18", num_classes=3)
    freeze_layers(model, "resnet", 5)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"fc.weight", "fc.bias"}


def test_too_many_groups_names_the_max() -> None:
    model = create_model("classification", "resnet18", num_classes=3)
    with pytest.raises(
        ConfigError,
        match=r"layers_to_freeze=6 is too large: this model has 5 "
        r"layer groups \(resnet\)\. Fix: use a value between 0 "
        r"and 5\.",
    ):
        freeze_layers(model, "resnet", 6)


def test_model_without_groups_is_refused() -> None:
    model = create_model("classification", "convnext_atto", num_classes=3)
    with pytest.raises(ConfigError, match=r"layers_to_freeze=1 is not supported for this model"):
        freeze_layers(model, get_model_spec("convnext_atto").layer_groups, 1)


def test_groups_that_do_not_fit_the_model_are_refused() -> None:
    model = create_model("classification", "resnet18", num_classes=3)
    with pytest.raises(ConfigError, match=r"no parameters under 'conv_stem\.'"):
        freeze_layers(model, "efficientnet", 1)


def test_mobilenetv2_keeps_azure_group_count_and_block_order() -> None:
    groups = LAYER_GROUPS["mobilenetv2"]
    assert len(groups) == 19  # Azure: features.0 ... features.18
    assert groups[1] == ("blocks.0.0.",) and groups[2] == ("blocks.1.0.",)
    assert groups[17] == ("blocks.6.0.",) and groups[18] == ("conv_head.", "bn2.")
    model = create_model("classification", "mobilenetv2", num_classes=3)
    freeze_layers(model, "mobilenetv2", 19)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "classifier.weight",
        "classifier.bias",
    }


def test_vit_first_group_is_the_embedding_and_blocks_do_not_overlap() -> None:
    model = create_model("classification", "vits16r224", num_classes=3, img_size=32)
    frozen = freeze_layers(model, "vit", 2)
    assert frozen == ["patch_embed.", "cls_token", "pos_embed", "blocks.0."]
    assert _frozen_top_modules(model) == {"patch_embed", "cls_token", "pos_embed", "blocks"}
    frozen_blocks = {
        n.split(".")[1]
        for n, p in model.named_parameters()
        if n.startswith("blocks.") and not p.requires_grad
    }
    assert frozen_blocks == {"0"}
    assert len(LAYER_GROUPS["vit"]) == 13 and len(LAYER_GROUPS["vit_large"]) == 25


def test_efficientnet_lite0_groups_cover_all_stages() -> None:
    model = create_model("classification", "efficientnet_lite0", num_classes=3)
    freeze_layers(model, "efficientnet", 8)
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {
        "conv_head",
        "bn2",
        "classifier",
    }


def test_yolov5_backbone_groups_are_the_ten_backbone_layers() -> None:
    detector = create_model("detection", "yolov5", num_classes=2, model_size="nano", img_size=64)
    frozen = freeze_layers(detector.model, "yolov5_backbone", 3)
    assert frozen == ["backbone.0.", "backbone.1.", "backbone.2."]
    still = {n.split(".")[1] for n, p in detector.model.named_parameters()
             if n.startswith("backbone.") and p.requires_grad}
    assert still == {str(i) for i in range(3, 10)}
    assert all(p.requires_grad for n, p in detector.model.named_parameters()
               if not n.startswith("backbone."))
    trained = {id(p) for g in detector.optimizer_parameter_groups(5e-4) for p in g["params"]}
    assert not any(id(p) in trained for p in detector.model.backbone[0].parameters())
    with pytest.raises(ConfigError, match=r"layers_to_freeze=11 is too large: this model has 10 "):
        freeze_layers(detector.model, "yolov5_backbone", 11)


def test_yolov5_efficientnet_lite0_groups_and_frozen_batch_norm_statistics() -> None:
    detector = create_model("detection", "yolov5_efficientnet_lite0", num_classes=2,
                            model_size="nano", img_size=64)
    assert detector.backbone_name == "efficientnet_lite0"
    assert len(LAYER_GROUPS["yolov5_efficientnet_lite0"]) == 9  # stem, 7 stages, SPPF
    frozen = freeze_layers(detector.model, get_model_spec(
        "yolov5_efficientnet_lite0", "detection").layer_groups, 4)
    assert frozen == ["backbone.body.conv_stem.", "backbone.body.bn1.", "backbone.body.blocks.0.",
                      "backbone.body.blocks.1.", "backbone.body.blocks.2."]
    body = detector.model.backbone.body
    assert not any(p.requires_grad for p in body.blocks[2].parameters())
    assert all(p.requires_grad for p in body.blocks[3].parameters())
    # Frozen layers keep their batch-norm statistics in train mode; trainable ones update theirs.
    detector.train()
    assert not body.bn1.training and not body.blocks[2][0].bn1.training
    assert body.blocks[3][0].bn1.training and detector.model.neck.training
    before_frozen = body.bn1.running_mean.clone()
    before_trained = body.blocks[3][0].bn1.running_mean.clone()
    detector.model(torch.rand(2, 3, 64, 64))
    assert torch.equal(body.bn1.running_mean, before_frozen)
    assert not torch.equal(body.blocks[3][0].bn1.running_mean, before_trained)
    detector.eval()
    assert not body.blocks[3][0].bn1.training
    with pytest.raises(ConfigError, match=r"layers_to_freeze=10 is too large: this model has 9 "):
        freeze_layers(detector.model, "yolov5_efficientnet_lite0", 10)
