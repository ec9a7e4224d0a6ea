"""Initial weights of the torchvision detectors: COCO / ImageNet files, timm backbones, local files,
fast offline errors, frozen BatchNorm and backbone layers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import timm
import torch
import torchvision

from visionauto.errors import ModelError
from visionauto.models import create_model, torchvision_detectors
from visionauto.models.detectors import TorchvisionDetector

SMALL = {"min_size": 96, "max_size": 128}
RESNET18_URL_FILE = "resnet18-f37072fd.pth"


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A torch hub cache without any file (whatever this machine has cached)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def _squares() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images = [torch.rand(3, 96, 96)]
    return images, [{"boxes": torch.tensor([[20.0, 20.0, 60.0, 60.0]]), "labels": torch.tensor([1])}]


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("fasterrcnn_resnet18_fpn", r"Pretrained ImageNet backbone weights for "
                                    r"'fasterrcnn_resnet18_fpn' \(Faster R-CNN, resnet18 backbone\)"),
        ("retinanet_resnet50_fpn", r"Pretrained COCO weights for 'retinanet_resnet50_fpn'"),
        ("fasterrcnn_convnext_atto_fpn", r"Pretrained ImageNet weights for the backbone of "
                                         r"'fasterrcnn_convnext_atto_fpn' .*\(timm convnext_atto\)"),
    ],
)
def test_offline_pretrained_fails_fast_with_the_fixes(
    name: str, what: str, empty_torch_home: Path
) -> None:
    start = time.monotonic()
    with pytest.raises(ModelError, match=what) as err:
        create_model("detection", name, num_classes=2, pretrained=True)
    assert time.monotonic() - start < 30  # no download retries (the build itself takes seconds)
    message = str(err.value)
    assert "cannot be downloaded: no internet connection" in message
    assert "model.pretrained=false" in message and "model.weights_path=" in message
    assert "model.name=fasterrcnn_efficientnet_lite0_fpn" in message


def test_pretrained_false_builds_without_network(empty_torch_home: Path) -> None:
    model = create_model("detection", "fasterrcnn_resnet18_fpn", num_classes=2, **SMALL)
    assert not model.freeze_bn
    assert all(p.requires_grad for p in model.parameters())  # from scratch: everything trains


def test_imagenet_backbone_from_torch_hub_cache(empty_torch_home: Path) -> None:
    """A cached torchvision file is used offline; BN and the stem + layer1 are frozen."""
    torch.manual_seed(3)
    resnet = torchvision.models.resnet18()
    empty_torch_home.mkdir(parents=True)
    torch.save(resnet.state_dict(), empty_torch_home / RESNET18_URL_FILE)
    model = create_model("detection", "fasterrcnn_resnet18_fpn", num_classes=2, pretrained=True,
                         **SMALL)
    body = model.net.backbone.body
    assert torch.equal(body.conv1.weight, resnet.conv1.weight)
    assert torch.equal(body.layer4[1].bn2.running_var, resnet.layer4[1].bn2.running_var)
    trainable = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}  # torchvision's trainable_backbone_layers=3
    assert not any(p.requires_grad for n, p in body.named_parameters() if ".bn" in n)
    model.train()
    assert model.training and model.net.rpn.training
    assert not body.layer3[0].bn1.training  # frozen BatchNorm keeps its ImageNet statistics
    running_mean = body.layer3[0].bn1.running_mean.clone()
    images, targets = _squares()
    model(images, targets)
    assert torch.equal(body.layer3[0].bn1.running_mean, running_mean)


def _legacy_coco_state(num_classes: int = 91) -> dict[str, torch.Tensor]:
    """torchvision's R50 Faster R-CNN state as the 2019 COCO file stores it: FrozenBatchNorm (no
    num_batches_tracked) and the pre-v2 key names of the FPN and RPN convs."""
    torch.manual_seed(5)
    reference = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=num_classes
    )
    state = {}
    for key, value in reference.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        key = key.replace("fpn.inner_blocks.0.0.", "fpn.inner_blocks.0.").replace(
            "rpn.head.conv.0.0.", "rpn.head.conv.")
        state[key] = value
    return state


def test_coco_weights_load_with_new_heads(monkeypatch: pytest.MonkeyPatch) -> None:
    coco = _legacy_coco_state()
    urls = []
    monkeypatch.setattr(torchvision_detectors, "fetch_torchvision_state",
                        lambda url, **kw: urls.append(url) or dict(coco))
    torch.manual_seed(0)
    model = create_model("detection", "fasterrcnn_resnet50_fpn", num_classes=3, pretrained=True,
                         **SMALL)
    assert urls == [torchvision.models.detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1.url]
    net = model.net
    assert torch.equal(net.backbone.fpn.inner_blocks[0][0].weight, coco["backbone.fpn.inner_blocks.0.weight"])
    assert torch.equal(net.rpn.head.conv[0][0].weight, coco["rpn.head.conv.weight"])
    assert torch.equal(net.roi_heads.box_head.fc7.weight, coco["roi_heads.box_head.fc7.weight"])
    assert net.roi_heads.box_predictor.cls_score.weight.shape == (4, 1024)  # 3 classes + background
    assert model.freeze_bn


def test_efficientnet_lite0_backbone_gets_offline_imagenet_weights(empty_torch_home: Path) -> None:
    model = create_model("detection", "fasterrcnn_efficientnet_lite0_fpn", num_classes=2,
                         pretrained=True, **SMALL)
    classifier = create_model("classification", "efficientnet_lite0", num_classes=1000,
                              pretrained=True)
    body = model.net.backbone.body
    assert torch.equal(body.conv_stem.weight, classifier.conv_stem.weight)
    assert torch.equal(body.blocks[5][2].conv_pw.weight, classifier.blocks[5][2].conv_pw.weight)
    assert torch.equal(body.blocks[3][0].bn1.running_mean, classifier.blocks[3][0].bn1.running_mean)
    # tf_efficientnet_lite0 was trained on inputs scaled to [-1, 1].
    assert model.net.transform.image_mean == [0.5, 0.5, 0.5]
    # Stem and the stride-4 stage are frozen (trainable_backbone_layers=3), later stages train.
    assert not body.conv_stem.weight.requires_grad and not body.blocks[1][0].conv_pw.weight.requires_grad
    assert body.blocks[2][0].conv_pw.weight.requires_grad
    assert body.blocks[6][0].conv_pw.weight.requires_grad


def _save(state: dict[str, torch.Tensor], path: Path) -> str:
    torch.save(state, path)
    return str(path)


def test_weights_path_whole_detector_lightning_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(1)
    trained = create_model("detection", "retinanet_resnet18_fpn", num_classes=3)
    ckpt = {"state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}, "epoch": 2}
    path = _save(ckpt, tmp_path / "last.ckpt")
    model = create_model("detection", "retinanet_resnet18_fpn", num_classes=3, weights_path=path)
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # Another number of classes: the class-specific layer is new, everything else loads.
    other = create_model("detection", "retinanet_resnet18_fpn", num_classes=5, weights_path=path)
    head = other.net.head.classification_head
    assert head.cls_logits.weight.shape[0] == 9 * 5
    assert torch.equal(head.conv[0][0].weight, trained.net.head.classification_head.conv[0][0].weight)


def test_weights_path_backbone_classifier(tmp_path: Path) -> None:
    """A timm classifier checkpoint initialises a detector backbone (its fc is ignored)."""
    torch.manual_seed(2)
    classifier = timm.create_model("convnext_atto", num_classes=7)
    path = _save(classifier.state_dict(), tmp_path / "convnext.pth")
    model = create_model("instance_segmentation", "maskrcnn_convnext_atto_fpn", num_classes=2,
                         weights_path=path, **SMALL)
    body = model.net.backbone.body
    # timm's feature extractor flattens stages.0 into stages_0: the names are mapped.
    assert torch.equal(body.stages_2.blocks[1].conv_dw.weight,
                       classifier.stages[2].blocks[1].conv_dw.weight)
    assert torch.equal(body.stem_0.weight, classifier.stem[0].weight)


def test_weights_path_that_fits_nothing(tmp_path: Path) -> None:
    path = _save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ModelError, match=r"do not fit model 'fasterrcnn_resnet18_fpn' .*none of "
                                         r"its 1 tensor names \(e\.g\. encoder\.weight\)"):
        create_model("detection", "fasterrcnn_resnet18_fpn", num_classes=2, weights_path=path)
    resnet50 = torchvision.models.resnet50().state_dict()
    path = _save(resnet50, tmp_path / "resnet50.pth")
    with pytest.raises(ModelError, match=r"do not fit the backbone of model "
                                         r"'fasterrcnn_resnet18_fpn' .*tensors of another shape "
                                         r"\(e\.g\. layer1\.0\.conv1\.weight \(64, 64, 1, 1\) vs "
                                         r"\(64, 64, 3, 3\)"):
        create_model("detection", "fasterrcnn_resnet18_fpn", num_classes=2, weights_path=path)


def test_trainable_layers_and_frozen_bn_options() -> None:
    """E.g. a warm start: built without pretrained weights, trained as a pretrained model."""
    model: TorchvisionDetector = create_model(
        "detection", "fasterrcnn_resnet18_fpn", num_classes=2, trainable_backbone_layers=1,
        freeze_bn=True)
    body = model.net.backbone.body
    trainable = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    assert trainable == {"layer4"}
    assert not body.layer4[0].bn1.weight.requires_grad
    assert not model.train().net.backbone.body.layer4[0].bn1.training
