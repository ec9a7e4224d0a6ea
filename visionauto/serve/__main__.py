"""``python -m visionauto.serve``: serve one or several models over HTTP (Azure's scoring schema).

Examples::

    python -m visionauto.serve --model outputs/run1 --auth-key-file key.txt
    python -m visionauto.serve --deployment blue=models:/fridge@champion:90 \\
        --deployment green=models:/fridge@challenger:10
    python -m visionauto.serve --deployments-file deployments.yml --host 0.0.0.0

The key may also come from ``$VISIONAUTO_AUTH_KEY``; without a key the endpoint is open. Model
references are checked before the server starts (exit code 2 with the reason); the weights load
in the background while ``/health/ready`` answers 503.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from visionauto.errors import ConfigError, VisionAutoError

if TYPE_CHECKING:
    from visionauto.packaging.predictor import Predictor
    from visionauto.serve.deployments import DeploymentSet, TrafficFileWatcher

AUTH_KEY_ENV = "VISIONAUTO_AUTH_KEY"
log = logging.getLogger("visionauto.serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m visionauto.serve",
        description="Serve visionauto models: POST /score with Azure's request body.",
    )
    models = parser.add_argument_group("models")
    models.add_argument("--model", help="model/run/sweep folder or models:/NAME@alias")
    models.add_argument(
        "--deployment",
        action="append",
        metavar="NAME=REF:WEIGHT",
        help="a deployment and its traffic percent (repeatable), e.g. blue=models:/m@champion:90",
    )
    models.add_argument("--deployments-file", type=Path, help="YAML file of deployments + traffic")
    models.add_argument("--tracking-uri", help="MLflow registry URI for models:/ references")
    models.add_argument(
        "--setting",
        action="append",
        metavar="KEY=VALUE",
        help="inference setting applied at load time, e.g. valid_crop_size=256 (repeatable)",
    )
    models.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    net = parser.add_argument_group("server")
    net.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in containers)")
    net.add_argument("--port", type=int, default=5001)
    net.add_argument("--auth-key", help=f"key for 'Authorization: Bearer' (or ${AUTH_KEY_ENV})")
    net.add_argument("--auth-key-file", type=Path, help="file holding the key")
    net.add_argument("--max-batch-size", type=int, default=16, help="images per forward pass")
    net.add_argument("--max-wait-ms", type=float, default=5.0, help="batching wait (ms)")
    net.add_argument("--max-request-bytes", type=int, default=32 * 1024 * 1024)
    net.add_argument("--max-images-per-request", type=int, default=64)
    net.add_argument(
        "--explain-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="limit of one model_explainability request, queueing included (504 beyond)",
    )
    net.add_argument("--reload-interval", type=float, default=1.0, help="deployments file poll (s)")
    net.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def read_auth_key(args: argparse.Namespace) -> str | None:
    """The key from ``--auth-key``, ``--auth-key-file`` or ``$VISIONAUTO_AUTH_KEY`` (at most one)."""
    if args.auth_key and args.auth_key_file:
        raise ConfigError("give --auth-key or --auth-key-file, not both.")
    key = args.auth_key
    if args.auth_key_file:
        try:
            key = args.auth_key_file.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise ConfigError(f"cannot read --auth-key-file {args.auth_key_file}: {err}") from None
        if not key:
            raise ConfigError(
                f"--auth-key-file {args.auth_key_file} is empty: write the key in it."
            )
    key = key or os.environ.get(AUTH_KEY_ENV) or None
    if key is not None and len(key) < 8:
        raise ConfigError("the auth key is shorter than 8 characters: use a long random key.")
    return key


def _check_limits(args: argparse.Namespace) -> None:
    for flag, value, minimum in (
        ("--max-batch-size", args.max_batch_size, 1),
        ("--max-wait-ms", args.max_wait_ms, 0),
        ("--max-request-bytes", args.max_request_bytes, 1),
        ("--max-images-per-request", args.max_images_per_request, 1),
        ("--explain-timeout", args.explain_timeout, 0.001),
        ("--port", args.port, 0),
    ):
        if value < minimum:
            raise ConfigError(f"{flag}={value} is invalid: expected a number >= {minimum}.")


def build_deployments(
    args: argparse.Namespace,
) -> tuple[DeploymentSet, TrafficFileWatcher | None]:
    """Parses the model arguments, checks every reference, builds the (unloaded) deployments."""
    from visionauto.packaging.predictor import load_predictor, parse_setting_pairs
    from visionauto.serve.deployments import (
        DEFAULT_NAME,
        DeploymentSet,
        DeploymentSpec,
        TrafficFileWatcher,
        load_deployments_file,
        parse_deployment_arg,
        specs_traffic,
    )

    given = [bool(args.model), bool(args.deployment), bool(args.deployments_file)]
    if sum(given) != 1:
        raise ConfigError(
            "give the model(s) one way: --model REF, or --deployment NAME=REF:WEIGHT (repeated), "
            "or --deployments-file FILE."
        )
    if args.deployments_file:
        specs, traffic = load_deployments_file(args.deployments_file)
    elif args.deployment:
        specs = [parse_deployment_arg(text) for text in args.deployment]
        traffic = specs_traffic(specs)
    else:
        specs, traffic = [DeploymentSpec(DEFAULT_NAME, args.model)], {DEFAULT_NAME: 100}
    common = parse_setting_pairs(args.setting)
    device = args.device or _default_device()
    checked = [
        DeploymentSpec(s.name, check_model_ref(s.model, args.tracking_uri), s.traffic, s.settings)
        for s in specs
    ]
    for spec in checked:
        log.info("deployment %s: %s (%d%% of traffic)", spec.name, spec.model, traffic[spec.name])

    def loader(spec: DeploymentSpec) -> Predictor:
        overrides = {**common, **spec.settings}
        predictor = load_predictor(
            spec.model, tracking_uri=args.tracking_uri, settings_overrides=overrides, device=device
        )
        warm_up(predictor)
        return predictor

    deployments = DeploymentSet(
        checked,
        traffic,
        loader=loader,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
    )
    watcher = None
    if args.deployments_file:
        watcher = TrafficFileWatcher(args.deployments_file, deployments, args.reload_interval)
    return deployments, watcher


def warm_up(predictor: Predictor) -> None:
    """One forward pass and the request decoders' imports, before readiness turns 200.

    The first pass of a network is slow (memory and kernel set-up), and the base64 decoder
    imports MLflow: neither should land on a client's first request.
    """
    from PIL import Image

    import visionauto.packaging.pyfunc  # noqa: F401 - imported for its side effect (warm-up)

    predictor.predict([Image.new("RGB", (64, 64), (128, 128, 128))])


def check_model_ref(ref: str, tracking_uri: str | None) -> str:
    """Fails fast on a wrong reference; pins ``models:/NAME@alias`` to its current version.

    Pinning means a later move of the alias does not change a running deployment behind its
    back; restart (or redeploy) to pick the new version up.
    """
    from visionauto.packaging.predictor import resolve_model_dir
    from visionauto.packaging.registry import is_registry_ref, resolve_version

    if is_registry_ref(ref):
        version = resolve_version(ref, tracking_uri=tracking_uri)
        return f"models:/{version.name}/{version.version}"
    return str(resolve_model_dir(ref).resolve())


def _default_device() -> str:
    if os.environ.get("VISIONAUTO_DEVICE"):
        return os.environ["VISIONAUTO_DEVICE"]
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> int:
    """Starts the server; returns 2 for user errors (printed without a traceback)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        _check_limits(args)
        auth_key = read_auth_key(args)
        deployments, watcher = build_deployments(args)
    except VisionAutoError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    import uvicorn

    from visionauto.serve.app import Limits, create_app

    if auth_key is None:
        log.warning("no auth key: anyone who can reach %s:%s can score", args.host, args.port)
    app = create_app(
        deployments,
        auth_key=auth_key,
        limits=Limits(
            args.max_request_bytes,
            args.max_images_per_request,
            explain_timeout_s=args.explain_timeout,
        ),
        watcher=watcher,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
