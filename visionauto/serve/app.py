"""The HTTP endpoint: Azure's scoring schema, key auth, probes, limits, deployments.

Routes:
    ``POST /score``: Azure body ``{"input_data": {"columns": ["image"], "data": [<b64>, ...]}}`` or
    MLflow's ``{"dataframe_split": {"columns": ["image"], "data": [[<b64>], ...]}}``, with
    optional per-request inference settings under ``"settings"`` or ``"params"``. Answers
    Azure's list, one object per image (spec §4.2), and names the deployment that answered in
    the ``azureml-model-deployment`` response header. With ``model_explainability: true`` (in
    the first data cell, Azure's form ``{"image_base64": ..., "model_explainability": true,
    "xai_parameters": {...}}``, or at the top level of the body) each object also carries
    ``visualizations`` / ``attributions`` (spec §4.3); explanations skip micro-batching, run one
    at a time and answer 504 after ``Limits.explain_timeout_s``.
    ``GET /health/live``: 200 while the process serves. ``GET /health/ready``: 503 until every
    deployment is loaded, then 200. ``GET /deployments``, ``PUT /deployments/traffic``: see
    :mod:`visionauto.serve.deployments`.

Every client mistake is a 4xx with ``{"error": "..."}``; only bugs give a 500.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from visionauto.errors import DataError, VisionAutoError
from visionauto.packaging.settings import apply_overrides
from visionauto.serve.deployments import (
    PIN_HEADER,
    Deployment,
    DeploymentSet,
    TrafficFileWatcher,
)

log = logging.getLogger(__name__)

BODY_KEYS = ("input_data", "dataframe_split")
SETTINGS_KEYS = ("settings", "params")
XAI_KEYS = ("model_explainability", "xai_parameters")
_SCHEMA_HINT = (
    '{"input_data": {"columns": ["image"], "data": ["<base64 image>", ...]}} or '
    '{"dataframe_split": {"columns": ["image"], "data": [["<base64 image>"], ...]}}'
)


@dataclass(frozen=True)
class Limits:
    """Request limits: body size in bytes (413 beyond), images per request (413 beyond), and
    seconds an explanation request may take, queueing included (504 beyond)."""

    max_request_bytes: int = 32 * 1024 * 1024
    max_images_per_request: int = 64
    explain_timeout_s: float = 300.0


class RequestError(Exception):
    """A client mistake: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@dataclass(frozen=True)
class ScoreRequest:
    """A parsed scoring body: the ``image`` cells, the per-request settings and, for an
    explanation request, the raw ``xai_parameters`` (validated later, against the model)."""

    cells: list[Any]
    overrides: dict[str, Any]
    explain: bool
    xai_parameters: dict[str, Any] | None = None


def create_app(
    deployments: DeploymentSet,
    *,
    auth_key: str | None = None,
    limits: Limits | None = None,
    watcher: TrafficFileWatcher | None = None,
) -> FastAPI:
    """Builds the endpoint; loading starts in a background thread when the app starts.

    Args:
        deployments: the models behind the endpoint and their traffic split.
        auth_key: the key clients send as ``Authorization: Bearer <key>``; None = no auth.
        limits: request limits (defaults: 32 MiB, 64 images).
        watcher: re-reads the deployments file's traffic while the app runs.
    """
    limits = limits or Limits()
    # Explanations take seconds to minutes of every core: one at a time, beside the scoring.
    explain_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="visionauto-explain")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for deployment in deployments.deployments.values():
            deployment.batcher.start()
        threading.Thread(target=deployments.load_all, name="visionauto-load", daemon=True).start()
        if watcher is not None:
            watcher.start()
        yield
        if watcher is not None:
            watcher.stop()
        await asyncio.gather(*(d.batcher.stop() for d in deployments.deployments.values()))
        explain_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="visionauto endpoint",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    _add_error_handlers(app)
    auth = [Depends(_key_checker(auth_key))]
    _add_probes(app, deployments)
    _add_deployment_routes(app, deployments, auth, limits)
    _add_score_route(app, deployments, auth, limits, explain_pool)
    return app


def _key_checker(auth_key: str | None) -> Callable[[Request], None]:
    def require_key(request: Request) -> None:
        if auth_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken must not reveal how much of the key matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), auth_key.encode()
        ):
            raise RequestError(
                401,
                "missing or wrong key: send the header 'Authorization: Bearer <key>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_key


def _add_probes(app: FastAPI, deployments: DeploymentSet) -> None:
    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health/ready")
    async def ready() -> JSONResponse:
        states = {d.name: d.state for d in deployments.deployments.values()}
        if deployments.ready:
            return JSONResponse({"status": "ready", "deployments": states})
        failed = [f"{d.name}: {d.error}" for d in deployments.deployments.values() if d.error]
        message = "model failed to load: " + "; ".join(failed) if failed else "model is loading"
        return JSONResponse({"error": message, "deployments": states}, status_code=503)


def _add_deployment_routes(
    app: FastAPI, deployments: DeploymentSet, auth: list, limits: Limits
) -> None:
    @app.get("/deployments", dependencies=auth)
    async def list_deployments() -> dict[str, Any]:
        return {"traffic": dict(deployments.traffic), "deployments": deployments.describe()}

    @app.put("/deployments/traffic", dependencies=auth)
    async def put_traffic(request: Request) -> dict[str, Any]:
        body = _parse_json(await read_body(request, limits.max_request_bytes))
        try:
            return {"traffic": deployments.set_traffic(body, where="PUT /deployments/traffic")}
        except VisionAutoError as err:
            raise RequestError(400, str(err)) from None


def _add_score_route(
    app: FastAPI,
    deployments: DeploymentSet,
    auth: list,
    limits: Limits,
    explain_pool: ThreadPoolExecutor,
) -> None:
    @app.post("/score", dependencies=auth)
    async def score(request: Request) -> Response:
        deployment = _pick(deployments, request.headers.get(PIN_HEADER))
        ticket = deployment.batcher.announce()  # the batcher may wait for this one
        try:
            raw = await read_body(request, limits.max_request_bytes)
            parsed = parse_score_body(_parse_json(raw), limits.max_images_per_request)
            if parsed.explain:
                from visionauto.serve.explaining import explain_request

                ticket.close()  # explanations skip the batcher: it must not wait for this one
                content = await explain_request(deployment, parsed, limits, explain_pool)
                return Response(
                    content, media_type="application/json", headers={PIN_HEADER: deployment.name}
                )
            overrides = _check_overrides(deployment.predictor.settings, parsed.overrides)
            images = await run_in_threadpool(decode_images, parsed.cells)
            results = await deployment.batcher.submit(images, overrides, ticket=ticket)
        except VisionAutoError as err:  # e.g. a setting the model rejects at predict time
            raise RequestError(400, str(err)) from None
        finally:
            ticket.close()
        return JSONResponse(results, headers={PIN_HEADER: deployment.name})


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def request_error(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status, headers=err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.exception_handler(Exception)
    async def bug(request: Request, err: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"error": f"internal error ({type(err).__name__}); see the server log"},
            status_code=500,
        )


def _pick(deployments: DeploymentSet, pinned: str | None) -> Deployment:
    try:
        deployment = deployments.choose(pinned)
    except KeyError:
        raise RequestError(
            404,
            f"{PIN_HEADER}: no deployment named {pinned!r} "
            f"(deployments: {', '.join(deployments.deployments)}).",
        ) from None
    if deployment.state != "ready":
        detail = f"failed to load: {deployment.error}" if deployment.error else "is loading"
        raise RequestError(503, f"deployment {deployment.name!r} {detail}; retry later.")
    return deployment


async def read_body(request: Request, limit: int) -> bytes:
    """Reads the body, answering 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise RequestError(400, f"Content-Length {declared!r} is not a number of bytes.")
        if int(declared) > limit:
            raise RequestError(413, _too_large(int(declared), limit))
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:  # a chunked body, or a Content-Length that lied
            raise RequestError(413, _too_large(total, limit, at_least=True))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int, *, at_least: bool = False) -> str:
    more = "at least " if at_least else ""
    return (
        f"request body is {more}{size} bytes, over the limit of {limit} bytes: send fewer or "
        "smaller images per request, or start the endpoint with a larger --max-request-bytes."
    )


def _parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise RequestError(400, f"the request body is empty: send {_SCHEMA_HINT}.")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(400, f"the request body is not valid JSON: {err}.") from None
    except RecursionError:
        raise RequestError(400, "the request body nests JSON too deeply.") from None


def parse_score_body(body: Any, max_images: int) -> ScoreRequest:
    """Validates a scoring body; returns its cells (not yet decoded) and settings.

    Raises:
        RequestError: 400 for a wrong shape or an empty list, 413 for too many images.
    """
    if not isinstance(body, dict):
        raise RequestError(
            400, f"the body is a JSON {type(body).__name__}: expected {_SCHEMA_HINT}."
        )
    key = next((k for k in BODY_KEYS if k in body), None)
    if key is None:
        raise RequestError(400, f"the body has keys {sorted(body)}: expected {_SCHEMA_HINT}.")
    inner = body[key]
    if isinstance(inner, list):  # {"input_data": ["<b64>", ...]}, the HF-flavour shorthand
        inner = {"data": inner}
    if not isinstance(inner, dict) or not isinstance(inner.get("data"), list):
        raise RequestError(400, f"{key} must hold a 'data' list: expected {_SCHEMA_HINT}.")
    columns = inner.get("columns", ["image"])
    if columns != ["image"]:
        raise RequestError(400, f'{key}.columns is {columns!r}: expected exactly ["image"].')
    rows = inner["data"]
    if not rows:
        raise RequestError(400, f"{key}.data is empty: send at least one base64 image.")
    if len(rows) > max_images:
        raise RequestError(
            413,
            f"{key}.data has {len(rows)} images, over the limit of {max_images} per request: "
            "split the request, or start the endpoint with a larger --max-images-per-request.",
        )
    cells, first_flags = [], {}
    for index, row in enumerate(rows):
        cell = row[0] if isinstance(row, list) and len(row) == 1 else row
        cell, flags = _unwrap_explain_cell(cell, f"{key}.data[{index}]")
        if index == 0:  # Azure reads the flags of the first row and applies them to all
            first_flags = flags
        cells.append(cell)
    explain, xai_parameters = _xai_flags(body, first_flags, f"{key}.data[0]")
    return ScoreRequest(
        cells=cells,
        overrides=_settings_of(body),
        explain=explain,
        xai_parameters=xai_parameters,
    )


def _unwrap_explain_cell(cell: Any, where: str) -> tuple[Any, dict[str, Any]]:
    """A cell may be the JSON string ``{"image_base64": ..., "model_explainability": ...}``.

    Returns:
        The image cell and the explanation keys the cell gave (``XAI_KEYS``; may be empty).
    """
    if not (isinstance(cell, str) and cell.lstrip().startswith("{")):
        return cell, {}
    try:
        obj = json.loads(cell)
    except json.JSONDecodeError as err:
        raise RequestError(400, f"{where} looks like JSON but is not valid: {err}.") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("image_base64"), str):
        raise RequestError(400, f"{where} is a JSON object without an 'image_base64' string.")
    return obj["image_base64"], {k: obj[k] for k in XAI_KEYS if obj.get(k) is not None}


def _xai_flags(
    body: dict, cell_flags: dict[str, Any], cell_where: str
) -> tuple[bool, dict[str, Any] | None]:
    """``(model_explainability, xai_parameters)`` from the first cell or the top of the body."""
    top = {k: body[k] for k in XAI_KEYS if body.get(k) is not None}
    if top and cell_flags:
        raise RequestError(
            400,
            f"model_explainability/xai_parameters are given both in {cell_where} and at the top "
            "of the body: give them once (Azure's form is the first data cell).",
        )
    flags, where = (top, "the body") if top else (cell_flags, cell_where)
    explain = flags.get("model_explainability", False)
    if not isinstance(explain, bool):
        raise RequestError(
            400, f"model_explainability in {where} is {explain!r}: expected true or false."
        )
    parameters = flags.get("xai_parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise RequestError(
            400,
            f"xai_parameters in {where} must be an object like "
            f'{{"xai_algorithm": "xrai", "n_steps": 50}}, got {parameters!r}.',
        )
    return explain, parameters


def _settings_of(body: dict) -> dict[str, Any]:
    given = [k for k in SETTINGS_KEYS if body.get(k) is not None]
    if len(given) > 1:
        raise RequestError(400, "give per-request settings once, under 'settings' or 'params'.")
    if not given:
        return {}
    settings = body[given[0]]
    if not isinstance(settings, dict):
        raise RequestError(
            400,
            f"'{given[0]}' must be an object like {{\"valid_crop_size\": 256}}, got {settings!r}.",
        )
    return {k: v for k, v in settings.items() if v is not None}


def _check_overrides(settings: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Validates per-request settings before queuing, so a bad one fails only its own request."""
    if overrides:
        try:
            apply_overrides(settings, overrides)
        except VisionAutoError as err:
            raise RequestError(400, str(err)) from None
    return overrides


def decode_images(cells: list[Any]) -> list[Any]:
    """Base64 cells -> decoded RGB PIL images (400 for bad base64, 422 for a non-image)."""
    from visionauto.packaging.predictor import decode_image
    from visionauto.packaging.pyfunc import decode_cell

    images = []
    for index, cell in enumerate(cells):
        try:
            data = decode_cell(cell, row=index)
        except DataError as err:
            raise RequestError(400, str(err)) from None
        try:
            images.append(decode_image(data, index=index))
        except DataError as err:
            raise RequestError(422, str(err)) from None
    return images
