"""Explanation requests of the endpoint (spec §4.3): checks, the work off the event loop, timeout.

:func:`visionauto.serve.app.parse_score_body` finds ``model_explainability`` and
``xai_parameters``; this module validates them against the deployment's model, runs
:func:`visionauto.explain.explain_images` in the app's one explanation thread (no micro-batching:
an explanation is seconds of work per image) and answers 504 after ``Limits.explain_timeout_s``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

from starlette.concurrency import run_in_threadpool

from visionauto.explain.explainer import check_explainable, explain_images, to_response
from visionauto.explain.params import ExplainParameters
from visionauto.serve.app import (
    Limits,
    RequestError,
    ScoreRequest,
    _check_overrides,
    decode_images,
)
from visionauto.serve.deployments import Deployment


async def explain_request(
    deployment: Deployment, parsed: ScoreRequest, limits: Limits, pool: ThreadPoolExecutor
) -> bytes:
    """Predicts and explains a request's images (spec §4.3); returns the JSON response body.

    Parameters, task and algorithm are checked before any image is decoded (400); the work runs
    in ``pool`` and is abandoned with a 504 after ``limits.explain_timeout_s`` (it stops at the
    next image or class).

    Raises:
        VisionAutoError: a bad ``xai_parameters`` value, a task or model without explanations.
        RequestError: 400/422 for bad images, 504 on timeout.
    """
    predictor = deployment.predictor
    params = ExplainParameters.from_request(parsed.xai_parameters)
    check_explainable(predictor, params)
    overrides = _check_overrides(predictor.settings, parsed.overrides)
    images = await run_in_threadpool(decode_images, parsed.cells)
    cancelled = threading.Event()

    def work() -> bytes:
        results = explain_images(
            predictor, images, params, overrides=overrides, should_stop=cancelled.is_set
        )
        body = [to_response(result, predictor.task, params) for result in results]
        # Serialized here, off the event loop: attributions are 3*crop*crop floats per class.
        return json.dumps(body, allow_nan=False, separators=(",", ":")).encode()

    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(
            loop.run_in_executor(pool, work), timeout=limits.explain_timeout_s
        )
    except asyncio.TimeoutError:
        cancelled.set()
        raise RequestError(
            504,
            f"the explanation took longer than {limits.explain_timeout_s:g} s (queueing "
            "included): send fewer images, a faster xai_algorithm (guided_backprop < "
            "guided_gradcam < integrated_gradients < xrai), fewer n_steps, or start the endpoint "
            "with a larger --explain-timeout.",
        ) from None
