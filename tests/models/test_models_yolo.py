"""YOLOv5-style detector: shapes per size, settings, EMA, weights, anchors, target assignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visionauto.errors import ConfigError, DataError, ModelError
from visionauto.models.detectors import Detector
from visionauto.models.yolo import (
    anchor_fit_quality,
    box_sizes_at,
    build_yolov5,
    default_anchors,
    fit_anchors,
)
from visionauto.models.yolo.assign import assign_level
from visionauto.models.yolo.blocks import fuse_conv_bn
from visionauto.models.yolo.ema import ema_decay, ema_schedule
from visionauto.models.yolo.loss import YoloLoss


@pytest.fixture(autouse=True)
def _one_thread():
    # The CPU is shared: one thread avoids spin-waiting on a busy second core.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_head_shapes_per_size_and_params_grow() -> None:
    counts = []
    for size in ("nano", "small", "medium", "large", "extra_large"):
        model = build_yolov5(3, model_size=size, img_size=64)
        assert isinstance(model, Detector)
        with torch.no_grad():
            outputs = model.model(torch.zeros(1, 3, 64, 64))
        assert [tuple(o.shape) for o in outputs] == [
            (1, 3, 8, 8, 8),
            (1, 3, 4, 4, 8),
            (1, 3, 2, 2, 8),
        ]
        counts.append(sum(p.numel() for p in model.model.parameters()))
    assert counts == sorted(counts) and len(set(counts)) == 5
    # YOLOv5-like scale: small ~7M, large ~46M parameters.
    assert 6e6 < counts[1] < 8e6 and 40e6 < counts[3] < 50e6


def test_model_size_alias_and_errors() -> None:
    assert build_yolov5(2, model_size="xlarge", img_size=64).model_size == "extra_large"
    with pytest.raises(ConfigError, match="model_size='huge' is unknown.*small, medium"):
        build_yolov5(2, model_size="huge")
    with pytest.raises(ConfigError, match="backbone='resnet' is unknown"):
        build_yolov5(2, backbone="resnet")
    with pytest.raises(ModelError, match="CSP backbone has no pretrained weights.*AGPL"):
        build_yolov5(2, pretrained=True)


def test_eval_returns_boxes_in_input_pixels_and_settings() -> None:
    model = build_yolov5(2, model_size="nano", img_size=64, box_score_thresh=0.0)
    assert model.inference_settings() == {
        "img_size": 64,
        "model_size": "nano",
        "box_score_thresh": 0.0,
        "nms_iou_thresh": 0.5,
        "box_detections_per_img": 100,
    }
    model.set_inference_settings(box_iou_thresh=0.6, box_detections_per_img=7, min_size=600)
    model.eval()
    images = [torch.rand(3, 40, 100), torch.rand(3, 130, 50)]
    with torch.no_grad():
        preds = model(images)
    for pred, image in zip(preds, images, strict=True):
        assert len(pred["boxes"]) == 7 and pred["labels"].dtype == torch.int64
        assert float(pred["boxes"][:, 0::2].max()) <= image.shape[2]
        assert float(pred["boxes"][:, 1::2].max()) <= image.shape[1]
        assert torch.all(pred["scores"][:-1] >= pred["scores"][1:])
    model.set_inference_settings(img_size=100)
    assert model.inference_settings()["img_size"] == 128
    with pytest.raises(ConfigError, match="box_score_thresh=1.5 is invalid"):
        model.set_inference_settings(box_score_thresh=1.5)


def test_train_mode_losses_and_multi_scale_sizes() -> None:
    model = build_yolov5(2, model_size="nano", img_size=64, multi_scale=True)
    model.train()
    sizes = {model._train_size() for _ in range(60)}
    assert sizes <= {32, 64, 96} and len(sizes) >= 2
    targets = [
        {"boxes": torch.tensor([[5.0, 5.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    losses = model([torch.rand(3, 50, 70), torch.rand(3, 64, 64)], targets)
    assert set(losses) == {"loss_box", "loss_obj", "loss_cls"}
    assert all(v.ndim == 0 and float(v.detach()) > 0 for v in losses.values())
    with pytest.raises(ModelError, match=r"labels \[5\] are outside 0..1"):
        model(
            [torch.rand(3, 64, 64)], [{"boxes": targets[0]["boxes"], "labels": torch.tensor([5])}]
        )


def test_crowd_boxes_are_not_positives_and_mask_objectness() -> None:
    loss = YoloLoss(2, (8, 16, 32))
    outputs = [torch.zeros(1, 3, s, s, 7) for s in (8, 4, 2)]
    anchors = torch.as_tensor(default_anchors(64))
    box = torch.tensor([[10.0, 10.0, 40.0, 40.0]])
    crowd = loss(
        outputs,
        [{"boxes": box, "labels": torch.tensor([0]), "iscrowd": torch.tensor([1])}],
        anchors,
    )
    empty = loss(outputs, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0).long()}], anchors)
    normal = loss(outputs, [{"boxes": box, "labels": torch.tensor([0])}], anchors)
    assert float(crowd["loss_box"]) == 0.0 and float(crowd["loss_cls"]) == 0.0
    assert float(crowd["loss_obj"]) < float(empty["loss_obj"])
    assert float(normal["loss_box"]) > 0.0 and float(normal["loss_cls"]) > 0.0


def test_assign_level_centre_and_two_nearest_neighbours() -> None:
    # One box centred at (2.3, 3.7) grid units, the size of anchor 0 only.
    boxes = torch.tensor([[0.0, 1.0, 2.3, 3.7, 1.0, 2.0]])
    anchors = torch.tensor([[1.0, 2.0], [8.0, 8.0], [1.0, 0.1]])
    got = assign_level(boxes, anchors, (6, 6))
    cells = sorted(zip(got.grid_x.tolist(), got.grid_y.tolist(), strict=True))
    assert cells == [(1, 3), (2, 3), (2, 4)]  # centre, left (x frac .3), below (y frac .7)
    assert got.anchor.tolist() == [0, 0, 0] and got.label.tolist() == [1, 1, 1]
    offsets = {
        (x, y): b[:2].tolist()
        for x, y, b in zip(got.grid_x.tolist(), got.grid_y.tolist(), got.box, strict=True)
    }
    assert offsets[(1, 3)] == pytest.approx([1.3, 0.7])
    assert offsets[(2, 4)] == pytest.approx([0.3, -0.3])
    # At the border there is no neighbour outside the grid.
    edge = assign_level(torch.tensor([[0.0, 0.0, 0.4, 0.4, 1.0, 2.0]]), anchors, (6, 6))
    assert list(zip(edge.grid_x.tolist(), edge.grid_y.tolist(), strict=True)) == [(0, 0)]


def test_ema_follows_the_weights_and_is_used_for_eval() -> None:
    model = build_yolov5(2, model_size="nano", img_size=64)
    assert all(not p.requires_grad for p in model.ema.parameters())
    assert model._inference_net() is not model.ema  # a fused copy of the raw net
    with torch.no_grad():
        for p in model.model.parameters():
            p.add_(1.0)
    before = next(model.ema.parameters()).clone()
    model.after_optimizer_step()
    decay = ema_decay(1)
    assert decay == pytest.approx(0.9999 * (1 - np.exp(-1 / 2000)))
    raw, averaged = next(model.model.parameters()), next(model.ema.parameters())
    assert torch.allclose(averaged, decay * before + (1 - decay) * raw, atol=1e-6)
    assert int(model.ema_updates) == 1
    model.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        fused = model._inference_net()(x)
        reference = model.ema(x)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(fused, reference, strict=True))


def test_ema_schedule_fits_short_runs_and_keeps_yolov5_constants_for_long_ones() -> None:
    # 490 updates (70 epochs of 7 batches): ramp 49, window 1 / (1 - 0.9898) = 98 updates.
    decay_max, ramp = ema_schedule(490)
    assert (decay_max, ramp) == (pytest.approx(1 - 5 / 490), pytest.approx(49.0))
    assert ema_decay(490, decay_max, ramp) == pytest.approx(decay_max * (1 - np.exp(-10)))
    assert ema_decay(490) < 0.22  # YOLOv5's constants would still be copying the raw weights
    assert ema_schedule(1_000_000) == (0.9999, 2000.0)
    model = build_yolov5(2, model_size="nano", img_size=64)
    model.fit_ema_to_schedule(490)
    with torch.no_grad():
        for p in model.model.parameters():
            p.add_(1.0)
    before = next(model.ema.parameters()).clone()
    model.after_optimizer_step()
    decay = ema_decay(1, decay_max, ramp)
    raw, averaged = next(model.model.parameters()), next(model.ema.parameters())
    assert torch.allclose(averaged, decay * before + (1 - decay) * raw, atol=1e-6)


def test_fuse_conv_bn_keeps_outputs() -> None:
    model = build_yolov5(2, model_size="nano", img_size=64).model
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 64, 64))  # move the BN statistics away from the identity
    model.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        plain = model(x)
        fused = fuse_conv_bn(model)(x)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(plain, fused, strict=True))


def test_weights_path_roundtrip_and_new_head(tmp_path) -> None:
    source = build_yolov5(3, model_size="nano", img_size=64)
    source.after_optimizer_step()
    path = tmp_path / "yolo.pth"
    torch.save({"state_dict": {"model." + k: v for k, v in source.state_dict().items()}}, path)
    same = build_yolov5(3, model_size="nano", img_size=64, weights_path=str(path))
    assert torch.equal(same.model.head.convs[0].weight, source.model.head.convs[0].weight)
    assert int(same.ema_updates) == 1
    other = build_yolov5(5, model_size="nano", img_size=64, weights_path=str(path))
    assert other.model.head.convs[0].weight.shape[0] == 3 * 10
    assert torch.equal(other.model.backbone[0].conv.weight, source.model.backbone[0].conv.weight)
    with pytest.raises(ModelError, match="do not fit yolov5 \\(model_size=small"):
        build_yolov5(3, model_size="small", img_size=64, weights_path=str(path))


def test_efficientnet_lite0_backbone_loads_offline_imagenet_weights() -> None:
    import timm

    from visionauto.models.weights import load_efficientnet_lite0_imagenet

    model = build_yolov5(2, backbone="efficientnet_lite0", pretrained=True, img_size=64)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    load_efficientnet_lite0_imagenet(reference)
    stem = model.model.backbone.body.conv_stem.weight
    assert torch.equal(stem, reference.conv_stem.weight)
    assert torch.equal(model.ema.backbone.body.conv_stem.weight, stem)
    with torch.no_grad():
        shapes = [tuple(o.shape) for o in model.model(torch.zeros(1, 3, 64, 64))]
    assert shapes == [(1, 3, 8, 8, 7), (1, 3, 4, 4, 7), (1, 3, 2, 2, 7)]


def test_anchor_fit_and_quality() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[6, 6], [12, 30], [40, 20]], dtype=np.float64)
    wh = np.concatenate([c * np.exp(rng.normal(0, 0.1, (50, 2))) for c in centres])
    # The 640 px COCO anchors scaled to 640 px cannot learn these tiny boxes (ratio > 4).
    assert anchor_fit_quality(wh / 4, default_anchors(640)) < 0.98
    anchors = fit_anchors(wh / 4)
    assert anchors.shape == (9, 2) and anchors.dtype == np.float32
    assert np.all(np.diff(anchors.prod(axis=1)) >= 0)
    assert anchor_fit_quality(wh / 4, anchors) == 1.0
    assert np.array_equal(anchors, fit_anchors(wh / 4))  # deterministic for a seed
    assert anchor_fit_quality(np.zeros((0, 2)), anchors) == 1.0
    with pytest.raises(DataError, match="no boxes with a positive width"):
        fit_anchors(np.zeros((3, 2)))
    sizes = box_sizes_at([[0.0, 0.0, 0.5, 0.25]], [[200, 100]], 64)
    assert sizes.tolist() == [[32.0, 8.0]]
    model = build_yolov5(2, model_size="nano", img_size=64, anchors=anchors)
    assert torch.equal(model.anchors, torch.as_tensor(anchors))
    with pytest.raises(ConfigError, match="anchors must be 9"):
        build_yolov5(2, model_size="nano", img_size=64, anchors=anchors[:4])
