"""``explain()``: Azure's response schema and shapes, the 2x2 PNG, multilabel lists, parameter
checks, refusals (detection tasks, guided methods on a ViT) and the guided-model plumbing."""

from __future__ import annotations

import base64
import importlib.util
import io
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from visionauto.errors import ConfigError
from visionauto.explain import ExplainParameters, explain
from visionauto.explain.algorithms import find_gradcam_layer, make_guided_copy
from visionauto.explain.visualize import bgyw, render_grid, top_fraction_mask
from visionauto.models.registry import create_model
from visionauto.packaging.predictor import Predictor
from visionauto.packaging.settings import build_settings

CLASS_NAMES = ["can", "carton", "milk_bottle"]
CROP = 48


def make_predictor(task: str, name: str = "test_resnet", crop: int = CROP, **kw) -> Predictor:  # noqa: ANN003
    torch.manual_seed(0)
    model = create_model(task, name, num_classes=len(CLASS_NAMES), pretrained=False, **kw)
    settings = build_settings(
        task=task,
        model_name=name,
        class_names=CLASS_NAMES,
        inference={"valid_resize_size": crop + 8, "valid_crop_size": crop},
    )
    return Predictor(model, settings)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # small passes on a shared CPU: threads only wait for each other
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def multiclass() -> Predictor:
    return make_predictor("classification")


@pytest.fixture(scope="module")
def multilabel() -> Predictor:
    return make_predictor("multilabel")


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A 64x56 image with structure and no pure black pixel (the mask's black is unambiguous)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(30, 200, size=(56, 64, 3), dtype=np.uint8)
    pixels[10:30, 12:40] = (240, 200, 20)
    return Image.fromarray(pixels)


def decode_png(text: str) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    assert image.format == "PNG"
    return np.asarray(image.convert("RGB"))


def cropped_input(predictor: Predictor, image: Image.Image) -> np.ndarray:
    from visionauto.data.transforms import denormalize

    x = predictor.preprocess([image])[0]
    return np.round(denormalize(x).permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def test_multiclass_response_has_azure_keys_shapes_and_the_scoring_probabilities(
    multiclass: Predictor, photo: Image.Image
) -> None:
    (response,) = explain(multiclass, [photo], algorithm="guided_backprop", attributions=True)
    assert list(response) == ["probs", "labels", "visualizations", "attributions"]
    assert response["labels"] == CLASS_NAMES
    assert response["probs"] == pytest.approx(multiclass.predict([photo])[0]["probs"], abs=1e-6)
    assert isinstance(response["visualizations"], str)
    assert np.asarray(response["attributions"]).shape == (3, CROP, CROP)
    (plain,) = explain(multiclass, [photo], algorithm="guided_backprop")
    assert list(plain) == ["probs", "labels", "visualizations"]
    (arrays,) = explain(
        multiclass, [photo], algorithm="guided_backprop", visualizations=False, attributions=True
    )
    assert list(arrays) == ["probs", "labels", "attributions"]


def test_png_is_the_2x2_figure(multiclass: Predictor, photo: Image.Image) -> None:
    (response,) = explain(
        multiclass, [photo], algorithm="integrated_gradients", n_steps=8, attributions=True
    )
    grid = decode_png(response["visualizations"]).astype(int)
    assert grid.shape == (2 * CROP, 2 * CROP, 3)
    top_left, top_right = grid[:CROP, :CROP], grid[:CROP, CROP:]
    bottom_left, bottom_right = grid[CROP:, :CROP], grid[CROP:, CROP:]
    # (0, 0): the resized + center-cropped input the model saw.
    np.testing.assert_array_equal(top_left, cropped_input(multiclass, photo))
    # (0, 1): every colour lies on the blue-green-yellow-white scale.
    scale = bgyw(np.linspace(0.0, 1.0, 2001)).astype(int)
    distance = np.abs(top_right.reshape(-1, 1, 3) - scale[None]).sum(-1).min(1)
    assert distance.max() <= 3
    # (1, 0): the heat map blended half and half on the input.
    assert np.abs(bottom_left - (top_left + top_right) / 2).max() <= 1
    # (1, 1): the input where the attribution is in its top 30 %, black elsewhere.
    mask = top_fraction_mask(np.asarray(response["attributions"], dtype=np.float32))
    assert 0 < mask.sum() <= round(0.3 * CROP * CROP)
    np.testing.assert_array_equal(bottom_right[mask], top_left[mask])
    assert (bottom_right[~mask] == 0).all()


def test_render_grid_layout_on_a_known_attribution() -> None:
    image = np.full((4, 6, 3), 100, dtype=np.uint8)
    attribution = np.zeros((3, 4, 6), dtype=np.float32)
    attribution[:, 0, :] = 1.0  # the first row holds all the evidence
    grid = np.asarray(render_grid(image, attribution))
    assert grid.shape == (8, 12, 3)
    assert (grid[0, 6:] == bgyw(1.0)).all() and (grid[1:4, 6:] == bgyw(0.0)).all()
    assert (grid[4, 6:] == 100).all() and (grid[5:8, 6:] == 0).all()
    assert tuple(bgyw(1.0)) == (255, 255, 255)


def test_multilabel_explains_each_class_above_the_threshold(
    multilabel: Predictor, photo: Image.Image
) -> None:
    everything = explain(
        multilabel,
        [photo, photo],
        algorithm="guided_gradcam",
        attributions=True,
        confidence_score_threshold_multilabel=0.0,
    )
    for response in everything:
        assert len(response["visualizations"]) == len(CLASS_NAMES)
        assert np.asarray(response["attributions"]).shape == (len(CLASS_NAMES), 3, CROP, CROP)
    probs = everything[0]["probs"]
    threshold = sorted(probs)[1]  # exactly one class lies strictly above it
    (one,) = explain(
        multilabel,
        [photo],
        algorithm="guided_gradcam",
        attributions=True,
        confidence_score_threshold_multilabel=threshold,
    )
    assert len(one["visualizations"]) == len(one["attributions"]) == 1
    top = int(np.argmax(probs))
    np.testing.assert_allclose(one["attributions"][0], everything[0]["attributions"][top])
    (none,) = explain(multilabel, [photo], confidence_score_threshold_multilabel=1.0)
    assert none["visualizations"] == [] and none["probs"] == pytest.approx(probs, abs=1e-6)


def test_overrides_change_the_crop_of_the_attributions(
    multiclass: Predictor, photo: Image.Image
) -> None:
    (response,) = explain(
        multiclass,
        [photo],
        algorithm="guided_backprop",
        attributions=True,
        overrides={"valid_crop_size": 32},
    )
    assert np.asarray(response["attributions"]).shape == (3, 32, 32)
    assert decode_png(response["visualizations"]).shape == (64, 64, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"algorithm": "gradcam"}, "xai_algorithm='gradcam' is unknown: use one of xrai, "
         "guided_gradcam, integrated_gradients, guided_backprop"),
        ({"n_steps": 1}, r"n_steps=1 is invalid: expected a whole number >= 2"),
        ({"n_steps": 2.5}, r"n_steps=2.5 is invalid"),
        ({"n_steps": 10_001}, r"n_steps=10001 is invalid: expected a whole number >= 2 and <= "
         r"10000"),
        ({"n_steps": True}, r"n_steps=True is invalid"),
        ({"approximation_method": "simpson"}, "approximation_method='simpson' is unknown: use "
         "riemann_middle or gausslegendre"),
        ({"xrai_fast": "yes"}, "xrai_fast='yes' is invalid: expected true or false"),
        ({"visualizations": False}, "visualizations and attributions are both false"),
        ({"confidence_score_threshold_multilabel": 1.5}, r"confidence_score_threshold_multilabel"
         r"=1.5 is invalid: expected a probability in \[0, 1\]"),
    ],
)  # fmt: skip
def test_bad_parameters_fail_with_the_parameter_name_and_the_fix(
    multiclass: Predictor, photo: Image.Image, kwargs: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        explain(multiclass, [photo], **kwargs)


def test_xrai_without_its_optional_package_names_the_extra_and_the_alternatives(
    multiclass: Predictor, photo: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "saliency" else real(name, *a)
    )
    with pytest.raises(
        ConfigError,
        match=r"needs the optional package 'saliency', which is not installed: pip install "
        r"'visionauto\[xai\]', or use xai_algorithm='integrated_gradients'",
    ):
        explain(multiclass, [photo])


def test_xrai_on_a_flat_image_gives_finite_values(multiclass: Predictor) -> None:
    black = Image.new("RGB", (50, 50))
    (response,) = explain(multiclass, [black], n_steps=2, attributions=True)
    assert np.isfinite(np.asarray(response["attributions"])).all()


def test_request_parameters_use_azure_names() -> None:
    params = ExplainParameters.from_request(
        {"xai_algorithm": "integrated_gradients", "n_steps": 7, "xrai_fast": None}
    )
    assert params == ExplainParameters(algorithm="integrated_gradients", n_steps=7)
    assert ExplainParameters.from_request(None) == ExplainParameters()
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['algorithm'\]: allowed keys are "):
        ExplainParameters.from_request({"algorithm": "xrai"})
    with pytest.raises(ConfigError, match="xai_parameters must be an object"):
        ExplainParameters.from_request(["xrai"])  # type: ignore[arg-type]


@pytest.mark.parametrize("task", ["detection", "instance_segmentation"])
def test_detection_and_segmentation_are_not_supported(task: str, photo: Image.Image) -> None:
    predictor = SimpleNamespace(task=task, settings={"task": task})
    with pytest.raises(
        ConfigError,
        match=f"model_explainability is not supported for task={task}: explanations exist "
        "for classification and multilabel",
    ):
        explain(predictor, [photo])


def test_guided_methods_are_refused_for_a_vit_and_ig_works(photo: Image.Image) -> None:
    vit = make_predictor("classification", "test_vit", crop=32, img_size=32)
    for algorithm in ("guided_backprop", "guided_gradcam"):
        with pytest.raises(
            ConfigError,
            match=f"xai_algorithm='{algorithm}' does not work for model 'test_vit'.*transformer"
            ".*Use xai_algorithm='xrai' or 'integrated_gradients'",
        ):
            explain(vit, [photo], algorithm=algorithm)
    (response,) = explain(
        vit, [photo], algorithm="integrated_gradients", n_steps=4, attributions=True
    )
    assert np.asarray(response["attributions"]).shape == (3, 32, 32)


def test_gradcam_layer_is_the_last_feature_map() -> None:
    cpu = torch.device("cpu")
    resnet = create_model("classification", "test_resnet", num_classes=3)
    assert find_gradcam_layer(resnet, 64, cpu) == "layer4"
    plain = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(4, 2),
    )  # fmt: skip
    assert find_gradcam_layer(plain, 16, cpu) == "3"
    # At 8 px the last map is 1x1: still the last ReLU, never the global pooling.
    tiny = nn.Sequential(nn.Conv2d(3, 4, 8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    assert find_gradcam_layer(tiny, 8, cpu) == "1"


def test_guided_copy_turns_relu6_into_a_relu_and_computes_the_same_function() -> None:
    torch.manual_seed(0)
    model = create_model("classification", "efficientnet_lite0", num_classes=3).eval()
    guided = make_guided_copy(model)
    assert any(isinstance(m, nn.ReLU6) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU6) for m in guided.modules())
    assert not any(getattr(m, "inplace", False) for m in guided.modules())
    assert find_gradcam_layer(guided, 64, torch.device("cpu")) == "bn2"
    x = torch.randn(2, 3, 64, 64) * 3
    with torch.no_grad():
        torch.testing.assert_close(guided(x), model(x))
