"""Do the explanations point at the evidence? A synthetic task whose class is decided by a known
region: class ``square`` = the LEFT half holds a bright square; the right half is always noise.

A tiny CNN (with in-place ReLUs, to exercise the guided copy) is trained for a few seconds; each
algorithm must then put most of its top-30% pixels in the left half of images with a square.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from visionauto.explain import explain_images
from visionauto.explain.params import ALGORITHMS, ExplainParameters
from visionauto.explain.visualize import attribution_score, top_fraction_mask
from visionauto.packaging.predictor import Predictor
from visionauto.packaging.settings import build_settings

SIZE = 64
SQUARE = 14
CLASS_NAMES = ["empty", "square"]


def make_image(rng: np.random.Generator, with_square: bool) -> Image.Image:
    """u8 noise in [0, 120]; ``with_square``: a white SQUARE x SQUARE patch in the left half."""
    pixels = rng.integers(0, 120, size=(SIZE, SIZE, 3), dtype=np.uint8)
    if with_square:
        top = int(rng.integers(4, SIZE - SQUARE - 4))
        left = int(rng.integers(2, SIZE // 2 - SQUARE - 2))
        pixels[top : top + SQUARE, left : left + SQUARE] = 255
    return Image.fromarray(pixels)


def tiny_cnn() -> nn.Sequential:
    """Three conv layers with in-place ReLUs, global average pooling, a linear head."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 2),
    )


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    # On the shared CPU, OpenMP threads waiting for each other make small passes much slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(one_thread: None) -> Predictor:
    return train_region_model()


def train_region_model() -> Predictor:
    """The tiny CNN trained on 256 images (normalized by the predictor's own transform)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    settings = build_settings(
        task="classification",
        model_name="tiny_cnn",
        class_names=CLASS_NAMES,
        inference={"valid_resize_size": SIZE, "valid_crop_size": SIZE},
    )
    predictor = Predictor(tiny_cnn(), settings)
    labels = torch.tensor([i % 2 for i in range(256)])
    x = predictor.preprocess([make_image(rng, bool(y)) for y in labels.tolist()])
    model = predictor.model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(6):
        for index in torch.randperm(len(labels)).split(32):
            loss = nn.functional.cross_entropy(model(x[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    return predictor


def test_the_tiny_cnn_learned_the_task(trained: Predictor) -> None:
    rng = np.random.default_rng(1)
    truth = [i % 2 for i in range(40)]
    results = trained.predict([make_image(rng, bool(y)) for y in truth])
    predicted = [int(np.argmax(r["probs"])) for r in results]
    assert np.mean(np.array(predicted) == np.array(truth)) >= 0.95


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_top_30_percent_of_the_attribution_lies_in_the_decisive_left_half(
    trained: Predictor, algorithm: str
) -> None:
    rng = np.random.default_rng(2)
    images = [make_image(rng, True) for _ in range(3)]
    params = ExplainParameters(algorithm=algorithm, n_steps=20, attributions=True)
    results = explain_images(trained, images, params)
    for result in results:
        (explanation,) = result.explanations
        assert explanation.label == "square"
        assert explanation.attribution.shape == (3, SIZE, SIZE)
        top = top_fraction_mask(explanation.attribution)
        assert 0 < top.sum() <= round(0.3 * SIZE * SIZE)
        left_share = top[:, : SIZE // 2].sum() / top.sum()
        assert left_share > 0.8, (algorithm, left_share)
        # The square itself is the strongest evidence: its mean score beats the right half's.
        score = attribution_score(explanation.attribution)
        square = np.asarray(result.image).min(axis=2) == 255
        assert score[square].mean() > score[:, SIZE // 2 :].mean()


def test_guided_methods_leave_the_served_model_untouched(trained: Predictor) -> None:
    x = trained.preprocess([make_image(np.random.default_rng(3), True)])
    with torch.no_grad():
        before = trained.model(x)
    params = ExplainParameters(algorithm="guided_backprop", attributions=True)
    explain_images(trained, [make_image(np.random.default_rng(3), True)], params)
    relus = [m for m in trained.model.modules() if isinstance(m, nn.ReLU)]
    assert [m.inplace for m in relus] == [True, True, True]
    assert not any(m._backward_hooks or m._backward_pre_hooks for m in trained.model.modules())
    with torch.no_grad():
        torch.testing.assert_close(trained.model(x), before, rtol=0, atol=0)


def test_xrai_gives_one_region_map_repeated_over_the_channels(trained: Predictor) -> None:
    images = [make_image(np.random.default_rng(4), True)]
    params = ExplainParameters(algorithm="xrai", n_steps=10, attributions=True)
    (result,) = explain_images(trained, images, params)
    attribution = result.explanations[0].attribution
    assert np.array_equal(attribution[0], attribution[1])
    assert np.array_equal(attribution[0], attribution[2])
    # Regions, not pixels: far fewer distinct values than pixels.
    assert len(np.unique(attribution[0])) < SIZE * SIZE // 20
