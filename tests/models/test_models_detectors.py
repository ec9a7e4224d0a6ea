"""torchvision detectors: catalog, the Detector contract (0-based labels), settings, training."""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torchvision

from visionauto.errors import ConfigError, ModelError
from visionauto.models import MODELS, create_model, get_model_spec, model_defaults
from visionauto.models.detectors import Detector, TorchvisionDetector
from visionauto.models.registry import is_yolo

# Small enough for 2 shared CPU cores: 96-128 px inputs, few proposals.
RCNN_SMALL = {
    "min_size": 96,
    "max_size": 128,
    "rpn_pre_nms_top_n_train": 100,
    "rpn_post_nms_top_n_train": 50,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "rpn_batch_size_per_image": 64,
    "box_batch_size_per_image": 32,
}
RETINANET_SMALL = {"min_size": 96, "max_size": 128, "topk_candidates": 100}

DETECTION_CATALOG = [
    "fasterrcnn_resnet18_fpn",
    "fasterrcnn_resnet34_fpn",
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet101_fpn",
    "fasterrcnn_resnet152_fpn",
    "retinanet_resnet50_fpn",
]
SEGMENTATION_CATALOG = [f"maskrcnn_resnet{d}_fpn" for d in (18, 34, 50, 101, 152)]


def _task(name: str) -> str:
    return "instance_segmentation" if name.startswith("maskrcnn") else "detection"


def _small(name: str) -> dict:
    return RETINANET_SMALL if name.startswith("retinanet") else RCNN_SMALL


def _build(name: str, num_classes: int = 3, **kwargs) -> TorchvisionDetector:
    torch.manual_seed(0)
    return create_model(_task(name), name, num_classes=num_classes, **(_small(name) | kwargs))


def _squares() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two 96 px images with one coloured square each: a red one (class 0), a green one (1)."""
    images = [torch.zeros(3, 96, 96), torch.zeros(3, 96, 112)]
    images[0][0, 20:60, 20:60] = 1.0
    images[1][1, 30:70, 40:80] = 1.0
    targets = []
    for (x0, y0, x1, y1), label, image in zip(
        [(20, 20, 60, 60), (40, 30, 80, 70)], [0, 1], images, strict=True
    ):
        masks = torch.zeros(1, *image.shape[1:], dtype=torch.uint8)
        masks[0, y0:y1, x0:x1] = 1
        targets.append(
            {
                "boxes": torch.tensor([[x0, y0, x1, y1]], dtype=torch.float32),
                "labels": torch.tensor([label]),
                "iscrowd": torch.tensor([0]),
                "masks": masks,
                "image_id": len(targets),
            }
        )
    return images, targets


# ------------------------------------------------------------------------------- catalog


def test_catalog_detectors_follow_azure() -> None:
    detection = [n for n, s in MODELS.items() if s.tasks == ("detection",)]
    segmentation = [n for n, s in MODELS.items() if s.tasks == ("instance_segmentation",)]
    assert detection == [*DETECTION_CATALOG, "yolov5", "yolov5_efficientnet_lite0"]
    assert segmentation == SEGMENTATION_CATALOG
    spec = MODELS["fasterrcnn_resnet101_fpn"]
    assert (spec.source, spec.builder_name, spec.backbone, spec.backbone_source) == (
        "torchvision", "fasterrcnn", "resnet101", "torchvision")
    assert (spec.layer_groups, spec.image_size) == (None, 600)
    yolo = MODELS["yolov5"]
    assert (yolo.source, yolo.builder_name, yolo.image_size) == ("yolo", "yolov5", 640)
    assert (yolo.backbone, yolo.layer_groups) == ("csp", "yolov5_backbone")
    assert is_yolo("yolov5") and is_yolo("yolov5_efficientnet_lite0")
    assert not is_yolo("fasterrcnn_resnet50_fpn") and not is_yolo("fasterrcnn_convnext_atto_fpn")
    lite = MODELS["yolov5_efficientnet_lite0"]
    assert (lite.source, lite.builder_name, lite.backbone, lite.layer_groups) == (
        "yolo", "yolov5", "efficientnet_lite0", "yolov5_efficientnet_lite0")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fasterrcnn_efficientnet_lite0_fpn",
         ("detection", "fasterrcnn", "tf_efficientnet_lite0", "timm")),
        ("retinanet_resnet18_fpn", ("detection", "retinanet", "resnet18", "torchvision")),
        ("maskrcnn_convnext_atto_fpn",
         ("instance_segmentation", "maskrcnn", "convnext_atto", "timm")),
        ("retinanet_seresnext_fpn", ("detection", "retinanet", "seresnext50_32x4d", "timm")),
    ],
)
def test_any_backbone_resolves_to_a_detector_spec(name: str, expected: tuple) -> None:
    spec = get_model_spec(name)
    assert (spec.tasks[0], spec.builder_name, spec.backbone, spec.backbone_source) == expected
    assert spec.name == name and spec.source == "torchvision"


def test_unknown_backbone_names_close_matches() -> None:
    with pytest.raises(
        ModelError,
        match=r"Unknown model name 'fasterrcnn_efficientnet_lite_fpn': 'efficientnet_lite' is "
        r"neither a torchvision ResNet .*Close backbone names: efficientnet_lite0",
    ):
        get_model_spec("fasterrcnn_efficientnet_lite_fpn")


def test_wrong_task_lists_the_task_models() -> None:
    with pytest.raises(
        ModelError,
        match=r"Model 'maskrcnn_resnet50_fpn' cannot be used for task=detection: it supports "
        r"instance_segmentation\. Models for detection: fasterrcnn_resnet18_fpn, .*"
        r"retinanet_resnet50_fpn, yolov5, yolov5_efficientnet_lite0; or any backbone as "
        r"fasterrcnn_<backbone>_fpn",
    ):
        get_model_spec("maskrcnn_resnet50_fpn", "detection")
    with pytest.raises(ModelError, match=r"Models for instance_segmentation: maskrcnn_resnet18_fpn"):
        create_model("instance_segmentation", "fasterrcnn_resnet18_fpn", num_classes=2)


@pytest.mark.parametrize(
    ("task", "name", "expected"),
    [
        ("detection", "fasterrcnn_resnet50_fpn", (15, 2, 1, 0.005)),
        ("detection", "retinanet_resnet50_fpn", (15, 2, 1, 0.005)),
        ("detection", "fasterrcnn_convnext_atto_fpn", (15, 2, 1, 0.005)),
        ("instance_segmentation", "maskrcnn_resnet101_fpn", (15, 2, 1, 0.005)),
        ("detection", "yolov5", (30, 16, 16, 0.01)),
    ],
)
def test_detector_defaults_follow_azure(task: str, name: str, expected: tuple) -> None:
    keys = ("number_of_epochs", "training_batch_size", "validation_batch_size", "learning_rate")
    assert model_defaults(task, name) == dict(zip(keys, expected, strict=True))


@pytest.mark.parametrize(
    ("name", "builder"),
    [
        ("fasterrcnn_resnet50_fpn", torchvision.models.detection.fasterrcnn_resnet50_fpn),
        ("retinanet_resnet50_fpn", torchvision.models.detection.retinanet_resnet50_fpn),
        ("maskrcnn_resnet50_fpn", torchvision.models.detection.maskrcnn_resnet50_fpn),
    ],
)
def test_r50_models_have_torchvision_coco_layout(name: str, builder) -> None:
    """Same tensors as torchvision's own R50-FPN model, so its COCO weights load one to one."""
    with torch.device("meta"):
        ours = create_model(_task(name), name, num_classes=4).net.state_dict()
        num_classes = 4 if name.startswith("retinanet") else 5
        reference = builder(weights=None, weights_backbone=None, num_classes=num_classes)
    assert {k: v.shape for k, v in ours.items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }


@pytest.mark.parametrize("name", DETECTION_CATALOG + SEGMENTATION_CATALOG)
def test_every_catalog_detector_builds(name: str) -> None:
    """The module tree of every catalog name (meta device: no memory, no init time)."""
    with torch.device("meta"):
        model = create_model(_task(name), name, num_classes=4)
    assert isinstance(model, Detector) and model.num_classes == 4
    depth = int(name.split("_")[1].removeprefix("resnet"))
    blocks = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3],
              152: [3, 8, 36, 3]}[depth]
    body = model.net.backbone.body
    assert [len(getattr(body, f"layer{i}")) for i in range(1, 5)] == blocks
    if name.startswith("retinanet"):
        assert model.net.head.classification_head.num_classes == 4
    else:
        assert model.net.roi_heads.box_predictor.cls_score.out_features == 5  # + background
    if name.startswith("maskrcnn"):
        assert model.net.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 5


def test_yolov5_is_built_by_the_yolo_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    fake = types.ModuleType("visionauto.models.yolo")
    fake.build_yolov5 = lambda num_classes, **kw: calls.append((num_classes, kw)) or "yolo-model"
    monkeypatch.setitem(sys.modules, "visionauto.models.yolo", fake)
    model = create_model("detection", "yolov5", num_classes=3, model_size="small", img_size=None)
    assert model == "yolo-model"
    assert calls == [(3, {"backbone": "csp", "pretrained": False, "weights_path": None,
                          "model_size": "small"})]
    # The backbone comes from the name.
    create_model("detection", "yolov5_efficientnet_lite0", num_classes=2, pretrained=True)
    assert calls[1] == (2, {"backbone": "efficientnet_lite0", "pretrained": True,
                            "weights_path": None})


# ------------------------------------------------------------------------------ contract


@pytest.mark.parametrize(
    "name", ["fasterrcnn_resnet18_fpn", "retinanet_resnet18_fpn", "maskrcnn_resnet18_fpn"]
)
def test_train_losses_finite_and_backprop(name: str) -> None:
    model = _build(name).train()
    images, targets = _squares()
    losses = model(images, targets)
    expected = {
        "fasterrcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"},
        "retinanet": {"classification", "bbox_regression"},
        "maskrcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg",
                     "loss_mask"},
    }[name.split("_")[0]]
    assert set(losses) == expected
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    head = (model.net.head.classification_head.cls_logits if name.startswith("retinanet")
            else model.net.roi_heads.box_predictor.cls_score)
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def _force_class(model: TorchvisionDetector, label: int) -> None:
    """Make the classifier score every box as the 0-based class ``label``, with certainty."""
    with torch.no_grad():
        if model.family == "retinanet":
            logits = model.net.head.classification_head.cls_logits
            logits.weight.zero_()
            logits.bias.fill_(-20.0)
            logits.bias.view(-1, model.num_classes)[:, label] = 20.0
        else:
            cls_score = model.net.roi_heads.box_predictor.cls_score
            cls_score.weight.zero_()
            cls_score.bias.fill_(-20.0)
            cls_score.bias[label + 1] = 20.0  # index 0 is the background


@pytest.mark.parametrize("name", ["fasterrcnn_resnet18_fpn", "retinanet_resnet18_fpn"])
def test_eval_output_follows_contract_with_0_based_labels(name: str) -> None:
    model = _build(name).eval()
    _force_class(model, 2)
    images, _ = _squares()
    with torch.no_grad():
        preds = model(images)
    assert len(preds) == 2
    for pred, image in zip(preds, images, strict=True):
        assert set(pred) == {"boxes", "scores", "labels"}
        k = len(pred["boxes"])
        assert 0 < k <= 100
        assert pred["boxes"].dtype == torch.float32 and pred["boxes"].shape == (k, 4)
        assert pred["scores"].dtype == torch.float32 and pred["labels"].dtype == torch.int64
        assert pred["labels"].tolist() == [2] * k
        # Boxes are in the pixels of the input image (not of the resized one).
        height, width = image.shape[1:]
        assert pred["boxes"][:, 2].max() <= width and pred["boxes"][:, 3].max() <= height


def test_mask_rcnn_returns_mask_probabilities() -> None:
    model = _build("maskrcnn_resnet18_fpn").eval()
    _force_class(model, 0)
    images, _ = _squares()
    with torch.no_grad():
        pred = model(images)[1]
    k = len(pred["boxes"])
    assert k > 0 and pred["masks"].shape == (k, 1, 96, 112)
    assert pred["masks"].dtype == torch.float32
    assert 0.0 <= pred["masks"].min() and pred["masks"].max() <= 1.0
    assert pred["labels"].tolist() == [0] * k


def test_mask_rcnn_training_needs_masks() -> None:
    model = _build("maskrcnn_resnet18_fpn").train()
    images, targets = _squares()
    del targets[0]["masks"]
    with pytest.raises(ModelError, match=r"Mask R-CNN needs instance masks .* masks=True"):
        model(images, targets)


def test_labels_out_of_range_name_the_fix() -> None:
    model = _build("fasterrcnn_resnet18_fpn", num_classes=2).train()
    images, targets = _squares()
    targets[1]["labels"] = torch.tensor([2])
    with pytest.raises(ModelError, match=r"Target labels \[2\] are outside 0\.\.1: .*2 classes"):
        model(images, targets)


def test_crowd_and_empty_boxes_are_not_trained_on() -> None:
    model = _build("fasterrcnn_resnet18_fpn").train()
    images, targets = _squares()
    targets[0]["iscrowd"] = torch.tensor([1])
    targets[1]["boxes"] = torch.tensor([[40.0, 30.0, 40.0, 70.0]])  # zero width: torchvision raises
    internal = [model._to_internal(t) for t in targets]
    assert [len(t["boxes"]) for t in internal] == [0, 0]
    losses = model(images, targets)  # images without objects are negatives
    assert torch.isfinite(sum(losses.values()))


# ---------------------------------------------------------------------- inference settings


def test_azure_inference_defaults() -> None:
    with torch.device("meta"):
        model = create_model("detection", "fasterrcnn_resnet18_fpn", num_classes=2)
        retina = create_model("detection", "retinanet_resnet50_fpn", num_classes=2)
    expected = {"box_score_thresh": 0.3, "nms_iou_thresh": 0.5, "box_detections_per_img": 100,
                "min_size": 600, "max_size": 1333}
    assert model.inference_settings() == expected
    assert retina.inference_settings() == expected
    assert (retina.net.score_thresh, retina.net.detections_per_img) == (0.3, 100)
    assert model.net.transform.min_size == (600,)


def test_set_inference_settings_maps_onto_torchvision() -> None:
    model = _build("fasterrcnn_resnet18_fpn")
    model.set_inference_settings(box_score_thresh=0.05, box_nms_thresh=0.4, min_size=[64, 96],
                                 max_size=160, img_size=640, tile_grid_size="2x2")
    heads = model.net.roi_heads
    assert (heads.score_thresh, heads.nms_thresh, heads.detections_per_img) == (0.05, 0.4, 100)
    assert (model.net.transform.min_size, model.net.transform.max_size) == ((64, 96), 160)
    assert model.inference_settings()["min_size"] == [64, 96]
    with pytest.raises(ConfigError, match=r"box_score_thresh=1\.5 is invalid: expected a number"):
        model.set_inference_settings(box_score_thresh=1.5)


@pytest.mark.parametrize("name", ["fasterrcnn_resnet18_fpn", "retinanet_resnet18_fpn"])
def test_detections_per_img_and_score_threshold_change_predictions(name: str) -> None:
    model = _build(name).eval()
    _force_class(model, 1)
    images, _ = _squares()
    with torch.no_grad():
        many = model(images[:1])[0]
        model.set_inference_settings(box_detections_per_img=1)
        one = model(images[:1])[0]
        model.set_inference_settings(box_score_thresh=1.0, box_detections_per_img=100)
        none = model(images[:1])[0]
    assert len(many["boxes"]) > 1 and len(one["boxes"]) == 1 and len(none["boxes"]) == 0


def test_builder_options_are_checked() -> None:
    with pytest.raises(ModelError, match=r"Unknown option anchor_sizes=\(8,\) for model "
                                         r"'fasterrcnn_resnet18_fpn' \(Faster R-CNN, resnet18 "
                                         r"backbone\)\. Inference settings: box_score_thresh"):
        create_model("detection", "fasterrcnn_resnet18_fpn", num_classes=2, anchor_sizes=(8,))
    with pytest.raises(ModelError, match=r"trainable_backbone_layers=7 .* integer in \[0, 5\]"):
        create_model("detection", "fasterrcnn_resnet18_fpn", num_classes=2,
                     trainable_backbone_layers=7)
    with pytest.raises(ModelError, match=r"num_classes=0 for model 'retinanet_resnet50_fpn'"):
        create_model("detection", "retinanet_resnet50_fpn", num_classes=0)



def test_timm_backbones_get_the_light_neck_and_heads() -> None:
    faster = create_model("detection", "fasterrcnn_efficientnet_lite0_fpn", num_classes=3)
    assert faster.net.backbone.out_channels == 128
    assert faster.net.roi_heads.box_head.fc6.in_features == 128 * 7 * 7
    assert faster.net.roi_heads.box_head.fc7.out_features == 256
    assert faster.net.roi_heads.box_predictor.cls_score.out_features == 4
    mask = create_model("instance_segmentation", "maskrcnn_efficientnet_lite0_fpn", num_classes=3)
    assert mask.net.roi_heads.mask_head[0][0].out_channels == 128
    assert mask.net.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4
    retina = create_model("detection", "retinanet_efficientnet_lite0_fpn", num_classes=3)
    assert retina.net.head.classification_head.conv[0][0].in_channels == 128
    # Caller options win; ResNets keep torchvision's widths so COCO weights load.
    wide = create_model("detection", "fasterrcnn_efficientnet_lite0_fpn", num_classes=3,
                        fpn_channels=256, box_representation_size=1024)
    assert wide.net.backbone.out_channels == 256
    assert wide.net.roi_heads.box_head.fc7.out_features == 1024
    resnet = create_model("detection", "fasterrcnn_resnet18_fpn", num_classes=3)
    assert resnet.net.backbone.out_channels == 256
    assert resnet.net.roi_heads.box_head.fc7.out_features == 1024


def test_width_options_are_checked() -> None:
    with pytest.raises(ModelError, match=r"fpn_channels=128 for model 'fasterrcnn_resnet18_fpn'.*"
                                         r"keep torchvision's 256-channel FPN"):
        create_model("detection", "fasterrcnn_resnet18_fpn", num_classes=2, fpn_channels=128)
    with pytest.raises(ModelError, match=r"box_representation_size=0 .* integer >= 8"):
        create_model("detection", "fasterrcnn_resnet18_fpn", num_classes=2,
                     box_representation_size=0)
    with pytest.raises(ModelError, match=r"Unknown option mask_head_channels=64 for model "
                                         r"'fasterrcnn_resnet18_fpn' "):
        create_model("detection", "fasterrcnn_resnet18_fpn", num_classes=2, mask_head_channels=64)
    with pytest.raises(ModelError, match=r"Unknown option box_representation_size=256 for model "
                                         r"'retinanet_resnet50_fpn' "):
        create_model("detection", "retinanet_resnet50_fpn", num_classes=2,
                     box_representation_size=256)


# ------------------------------------------------------------------------------- training


@pytest.mark.slow
def test_few_steps_on_two_squares_reduce_the_loss() -> None:
    model = _build("fasterrcnn_resnet18_fpn", num_classes=2).train()
    images, targets = _squares()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def losses_now() -> dict[str, float]:
        torch.manual_seed(1)  # the same proposal sampling each time
        with torch.no_grad():
            return {name: float(value) for name, value in model(images, targets).items()}

    before = losses_now()
    for _ in range(6):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = losses_now()
    # The box-regression loss may rise while more proposals become positives; the RPN learns
    # where the squares are and the total goes down.
    assert after["loss_objectness"] < 0.6 * before["loss_objectness"]
    assert sum(after.values()) < sum(before.values())
