"""Pretrained weights: local files, the offline efficientnet_lite0 package, fast offline errors."""

from __future__ import annotations

import time
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data as skdata

from visionauto.errors import ModelError
from visionauto.models import create_model

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _resnet18_state(num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return timm.create_model("resnet18", num_classes=num_classes).state_dict()


def test_weights_path_pth_with_other_head_size_keeps_backbone(tmp_path: Path) -> None:
    state = _resnet18_state(num_classes=10)
    path = tmp_path / "w.pth"
    torch.save(state, path)
    model = create_model("classification", "resnet18", num_classes=3, weights_path=str(path))
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.layer4[1].bn2.running_mean, state["layer4.1.bn2.running_mean"])
    assert model.fc.weight.shape == (3, 512)


def test_weights_path_same_head_size_loads_head_too(tmp_path: Path) -> None:
    state = _resnet18_state(num_classes=3)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    model = create_model("multilabel", "resnet18", num_classes=3, weights_path=str(path))
    assert torch.equal(model.fc.weight, state["fc.weight"])


def test_weights_path_lightning_checkpoint_with_prefix(tmp_path: Path) -> None:
    state = _resnet18_state(num_classes=5)
    ckpt = {"epoch": 3, "state_dict": {f"model.{k}": v for k, v in state.items()}}
    ckpt["state_dict"]["loss_fn.pos_weight"] = torch.ones(5)  # other task tensors are ignored
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    model = create_model("classification", "resnet18", num_classes=5, weights_path=str(path))
    assert torch.equal(model.fc.weight, state["fc.weight"])
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


def test_weights_path_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(
        ModelError,
        match=rf"Weights file not found: {missing}\. Fix: set "
        r"model\.weights_path",
    ):
        create_model("classification", "resnet18", num_classes=3, weights_path=str(missing))


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r34.pth"
    torch.save(timm.create_model("resnet34", num_classes=3).state_dict(), path)
    with pytest.raises(
        ModelError,
        match=r"do not fit model 'resnet18' \(timm\): .*unexpected "
        r"tensors \(e\.g\. layer1\.2\.conv1\.weight",
    ):
        create_model("classification", "resnet18", num_classes=3, weights_path=str(path))


def test_weights_file_that_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "junk.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(ModelError, match=rf"Cannot read weights file {path}"):
        create_model("classification", "resnet18", num_classes=3, weights_path=str(path))


class _NotATensor:
    pass


def test_weights_file_with_python_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.ckpt"
    torch.save({"state_dict": _resnet18_state(3), "extra": _NotATensor()}, path)
    with pytest.raises(
        ModelError,
        match=rf"Weights file {path} holds Python objects besides "
        r"tensors \(.*_NotATensor\) and is not loaded, for safety",
    ):
        create_model("classification", "resnet18", num_classes=3, weights_path=str(path))


def _chelsea_batch() -> torch.Tensor:
    image = Image.fromarray(skdata.chelsea()).resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
    return ((x - IMAGENET_MEAN) / IMAGENET_STD)[None]


def test_efficientnet_lite0_offline_imagenet_weights_see_the_cat() -> None:
    model = create_model(
        "classification", "efficientnet_lite0", num_classes=1000, pretrained=True
    ).eval()
    with torch.no_grad():
        probs = model(_chelsea_batch()).softmax(-1)[0]
    assert int(probs.argmax()) == 285  # ImageNet "Egyptian cat"
    assert float(probs[285]) > 0.6
    assert set(probs.topk(3).indices.tolist()) == {281, 282, 285}  # tabby, tiger cat, Egyptian


def test_efficientnet_lite0_pretrained_with_new_head() -> None:
    reference = create_model(
        "classification", "efficientnet_lite0", num_classes=1000, pretrained=True
    )
    model = create_model("multilabel", "efficientnet_lite0", num_classes=4, pretrained=True)
    assert model.classifier.weight.shape == (4, 1280)
    assert torch.equal(model.conv_stem.weight, reference.conv_stem.weight)
    assert torch.equal(model.blocks[6][0].conv_pwl.weight, reference.blocks[6][0].conv_pwl.weight)


@pytest.fixture
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No HF hub or torch hub cache: pretrained weights would have to be downloaded."""
    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return cache


FIX_TEXT = (
    r"Pretrained weights for 'seresnext' \(timm seresnext50_32x4d\) cannot be downloaded: "
    r"no internet connection\. Fix: set model\.weights_path=<local \.pth or \.safetensors>,"
    r" or model\.pretrained=false to train from scratch, or use model=efficientnet_lite0"
)


def test_offline_pretrained_fails_fast_with_fix_when_hf_offline(empty_caches: Path) -> None:
    start = time.monotonic()
    with pytest.raises(ModelError, match=FIX_TEXT):
        create_model("classification", "seresnext", num_classes=3, pretrained=True)
    assert time.monotonic() - start < 5


def test_offline_pretrained_fails_fast_when_the_probe_cannot_connect(
    empty_caches: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    start = time.monotonic()
    with pytest.raises(ModelError, match=FIX_TEXT):  # the guard fixture refuses the connect
        create_model("classification", "seresnext", num_classes=3, pretrained=True)
    assert time.monotonic() - start < 5


def test_pretrained_from_local_hf_cache_needs_no_network(empty_caches: Path) -> None:
    """Weights already in the HF cache (e.g. copied from an online machine) are used offline."""
    state = _resnet18_state(num_classes=1000, seed=3)
    snapshot = empty_caches / "models--timm--resnet18.a1_in1k" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    save_file(state, str(snapshot / "model.safetensors"))
    model = create_model("classification", "resnet18", num_classes=2, pretrained=True)
    assert torch.equal(model.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])
    assert model.fc.weight.shape == (2, 512)
