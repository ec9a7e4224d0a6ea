"""Explanations of a loaded :class:`~visionauto.packaging.predictor.Predictor` (spec §4.3).

Each image is decoded, resized and center-cropped exactly as for scoring; the probabilities come
from ``predictor.predict`` (so they equal a plain scoring call) and the attributions are computed
on the cropped image for the top class (multiclass) or every class above the threshold
(multilabel). Responses follow Azure: ``probs``, ``labels`` and, as asked, ``visualizations``
(base64 PNG of the 2x2 figure) and ``attributions`` (nested lists, ``[3, crop, crop]``).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from visionauto.explain import algorithms
from visionauto.explain.params import ExplainParameters, check_task
from visionauto.explain.visualize import png_base64, render_grid


class ExplanationCancelled(Exception):
    """Raised between two attributions when the caller's ``should_stop`` says so (timeouts)."""


@dataclass
class LabelExplanation:
    """The attribution of one explained class.

    Attributes:
        index: class index in the model output.
        label: class name.
        probability: the predicted probability of the class.
        attribution: f32[3, crop, crop] (XRAI: its 2-D map repeated over the channels).
    """

    index: int
    label: str
    probability: float
    attribution: np.ndarray


@dataclass
class ImageExplanation:
    """One image's prediction and explanations.

    Attributes:
        probs: probabilities of every class (softmax or sigmoid), as ``predictor.predict``.
        labels: class names in model order.
        image: u8[crop, crop, 3], the cropped input the attributions refer to.
        explanations: the top class (multiclass), or each class above the threshold (multilabel),
            in class order; may be empty for multilabel.
    """

    probs: list[float]
    labels: list[str]
    image: np.ndarray
    explanations: list[LabelExplanation]

    def figure(self, explanation: LabelExplanation):  # noqa: ANN201 - PIL.Image.Image
        """The 2x2 figure of one of this image's explanations (a PIL RGB image)."""
        return render_grid(self.image, explanation.attribution)


class ModelExplainer:
    """Per-model state: the guided copy of the network, GradCAM layers, and a lock.

    One explanation at a time per model: guided methods add hooks to the shared copy, and an
    explanation already uses every core. Holds the network, not the predictor, so that the
    weak cache of :func:`explainer_for` lets a dropped predictor go.
    """

    def __init__(self, model: nn.Module, device: torch.device, model_name: str) -> None:
        self.model = model
        self.device = device
        self.model_name = model_name
        self.lock = threading.Lock()
        self._guided: nn.Module | None = None
        self._layers: dict[int, str] = {}

    def check(self, params: ExplainParameters) -> None:
        """Refuses model/algorithm pairs without meaning (ConfigError naming those that work)."""
        algorithms.check_algorithm_supported(self.model, params.algorithm, self.model_name)

    def guided_model(self) -> nn.Module:
        if self._guided is None:
            self._guided = algorithms.make_guided_copy(self.model)
        return self._guided

    def gradcam_layer(self, image_size: int) -> str:
        if image_size not in self._layers:
            self._layers[image_size] = algorithms.find_gradcam_layer(
                self.guided_model(), image_size, self.device
            )
        return self._layers[image_size]

    def attribute(
        self, x: torch.Tensor, pixels: np.ndarray, target: int, params: ExplainParameters
    ) -> np.ndarray:
        """x f32[1, 3, H, W] (normalized), pixels f32[H, W, 3] -> attribution f32[3, H, W]."""
        name = params.algorithm
        if name == "integrated_gradients":
            result = algorithms.integrated_gradients(
                self.model,
                x,
                target,
                n_steps=params.n_steps,
                method=params.approximation_method,
            )
        elif name == "xrai":
            result = algorithms.xrai(
                self.model,
                x,
                pixels,
                target,
                n_steps=params.n_steps,
                method=params.approximation_method,
                fast=params.xrai_fast,
            )
        elif name == "guided_backprop":
            result = algorithms.guided_backprop(self.guided_model(), x, target)
        else:
            assert name == "guided_gradcam", name  # validated by ExplainParameters
            layer = self.gradcam_layer(int(x.shape[-1]))
            result = algorithms.guided_gradcam(self.guided_model(), layer, x, target)
        return result.numpy().astype(np.float32, copy=False)


_EXPLAINERS: weakref.WeakKeyDictionary[Any, ModelExplainer] = weakref.WeakKeyDictionary()
_EXPLAINERS_LOCK = threading.Lock()


def explainer_for(predictor: Any) -> ModelExplainer:
    """The :class:`ModelExplainer` of ``predictor`` (made once, freed with the predictor)."""
    with _EXPLAINERS_LOCK:
        if predictor not in _EXPLAINERS:
            _EXPLAINERS[predictor] = ModelExplainer(
                predictor.model, predictor.device, predictor.settings.get("model_name", "?")
            )
        return _EXPLAINERS[predictor]


def check_explainable(predictor: Any, params: ExplainParameters) -> None:
    """Fails fast, before any image is decoded, for a task or model without explanations.

    Raises:
        ConfigError: detection/segmentation models, or a guided method on a non-ReLU model.
    """
    check_task(predictor.task)
    explainer_for(predictor).check(params)


def explain_images(
    predictor: Any,
    images: Sequence[Any],
    params: ExplainParameters,
    *,
    overrides: dict[str, Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[ImageExplanation]:
    """Predicts and explains images (the structured form; :func:`explain` formats it for JSON).

    Args:
        predictor: a classification or multilabel :class:`Predictor`.
        images: encoded image files (bytes) or PIL images.
        params: what to explain and how.
        overrides: inference settings for this call (e.g. ``{"valid_crop_size": 256}``).
        should_stop: polled before each attribution; True raises :class:`ExplanationCancelled`.

    Returns:
        One :class:`ImageExplanation` per image, in input order.

    Raises:
        ConfigError: unsupported task or algorithm, or a bad override.
        DataError: an image cannot be decoded (the message gives its index).
    """
    from visionauto.data.transforms import denormalize
    from visionauto.packaging.predictor import decode_image
    from visionauto.packaging.settings import apply_overrides

    check_explainable(predictor, params)
    explainer = explainer_for(predictor)
    settings = apply_overrides(predictor.settings, overrides)
    pil_images = [decode_image(image, index=i) for i, image in enumerate(images)]
    predictions = predictor.predict(pil_images, overrides=overrides)
    results = []
    for pil_image, prediction in zip(pil_images, predictions, strict=True):
        x = predictor.preprocess([pil_image], settings)
        pixels = denormalize(x[0].detach()).permute(1, 2, 0).float().cpu().numpy()
        explained = []
        for target in _targets(predictor.task, prediction["probs"], params):
            if should_stop is not None and should_stop():
                raise ExplanationCancelled("explanation cancelled by the caller")
            with explainer.lock:
                attribution = explainer.attribute(x, pixels, target, params)
            label = prediction["labels"][target]
            explained.append(
                LabelExplanation(target, label, prediction["probs"][target], attribution)
            )
        image = np.round(pixels * 255.0).astype(np.uint8)
        results.append(
            ImageExplanation(prediction["probs"], prediction["labels"], image, explained)
        )
    return results


def _targets(task: str, probs: list[float], params: ExplainParameters) -> list[int]:
    """The classes to explain: the top one (multiclass) or all above the threshold (multilabel)."""
    if task == "multilabel":
        threshold = params.confidence_score_threshold_multilabel
        return [index for index, p in enumerate(probs) if p > threshold]
    return [int(np.argmax(probs))]


def to_response(result: ImageExplanation, task: str, params: ExplainParameters) -> dict[str, Any]:
    """Azure's response object of one image (spec §4.3).

    Multiclass: ``visualizations`` is one base64 PNG and ``attributions`` one nested list
    ``[3][crop][crop]``; multilabel: lists of those, one per explained class in class order.
    """
    response: dict[str, Any] = {"probs": result.probs, "labels": result.labels}
    explained = result.explanations
    figures = [png_base64(result.figure(e)) for e in explained] if params.visualizations else None
    arrays = [e.attribution.tolist() for e in explained] if params.attributions else None
    if task == "multilabel":
        if figures is not None:
            response["visualizations"] = figures
        if arrays is not None:
            response["attributions"] = arrays
    else:
        if figures is not None:
            response["visualizations"] = figures[0]
        if arrays is not None:
            response["attributions"] = arrays[0]
    return response


def explain(
    predictor: Any,
    images: Sequence[Any],
    *,
    algorithm: str = "xrai",
    n_steps: int = 50,
    xrai_fast: bool = True,
    approximation_method: str = "riemann_middle",
    visualizations: bool = True,
    attributions: bool = False,
    confidence_score_threshold_multilabel: float = 0.5,
    overrides: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Predicts and explains images; one Azure response object per image (spec §4.3).

    Args:
        predictor: a loaded classification or multilabel
            :class:`~visionauto.packaging.predictor.Predictor`.
        images: encoded image files (bytes) or PIL images.
        algorithm: ``xrai``, ``integrated_gradients``, ``guided_gradcam`` or ``guided_backprop``.
        n_steps: integrated-gradients steps (IG and XRAI), >= 2.
        xrai_fast: the faster, less precise XRAI.
        approximation_method: IG's approximation, ``riemann_middle`` (Azure's default) or
            ``gausslegendre`` (or another captum riemann variant).
        visualizations: include ``visualizations`` (base64 PNG of the 2x2 figure).
        attributions: include ``attributions`` (nested lists of shape [3, crop, crop]).
        confidence_score_threshold_multilabel: multilabel explains each class above it.
        overrides: inference settings for this call (e.g. ``{"valid_crop_size": 256}``).

    Returns:
        ``{"probs", "labels", "visualizations"?, "attributions"?}`` per image, in input order;
        multilabel models give lists (one entry per explained class, in class order).

    Raises:
        ConfigError: a bad parameter, a detection/segmentation model, or a guided method on a
            model without ReLUs (the message names the algorithms that work).
        DataError: an image cannot be decoded.
    """
    params = ExplainParameters(
        algorithm=algorithm,
        n_steps=n_steps,
        xrai_fast=xrai_fast,
        approximation_method=approximation_method,
        visualizations=visualizations,
        attributions=attributions,
        confidence_score_threshold_multilabel=confidence_score_threshold_multilabel,
    )
    results = explain_images(predictor, images, params, overrides=overrides)
    return [to_response(result, predictor.task, params) for result in results]
