"""The proposal / RoI budget: light for timm backbones (CPU models), torchvision's for the catalog."""

from __future__ import annotations

from visionauto.models.registry import create_model


def _budget(model) -> tuple[int, dict, dict]:  # noqa: ANN001
    net = model.net
    return (net.roi_heads.fg_bg_sampler.batch_size_per_image, dict(net.rpn._pre_nms_top_n),
            dict(net.rpn._post_nms_top_n))


def test_timm_backbone_rcnn_gets_the_light_budget() -> None:
    model = create_model("detection", "fasterrcnn_mobilenetv3_small_050_fpn", num_classes=2)
    assert _budget(model) == (128, {"training": 1000, "testing": 500},
                              {"training": 1000, "testing": 300})


def test_caller_options_win_over_the_light_budget() -> None:
    model = create_model("detection", "fasterrcnn_mobilenetv3_small_050_fpn", num_classes=2,
                         box_batch_size_per_image=64)
    assert _budget(model)[0] == 64


def test_catalog_resnet_keeps_torchvision_budget() -> None:
    model = create_model("detection", "fasterrcnn_resnet18_fpn", num_classes=2)
    assert _budget(model) == (512, {"training": 2000, "testing": 1000},
                              {"training": 2000, "testing": 1000})
