"""``python -m visionauto.model``: register a trained model, export it to ONNX.

Examples::

    python -m visionauto.model register outputs/2024-01-01/12-00-00 --name fridge --alias champion
    python -m visionauto.model export-onnx models:/fridge@champion --output onnx/model.onnx

Models are referenced by folder (model, run or sweep) or as ``models:/NAME@alias`` /
``models:/NAME/VERSION`` in the registry given by ``--tracking-uri`` or ``$MLFLOW_TRACKING_URI``
(default: ``outputs/mlflow.db`` under the current folder).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from visionauto.errors import VisionAutoError
from visionauto.packaging.predictor import parse_setting_pairs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m visionauto.model", description="Register or export a visionauto model."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    reg = sub.add_parser("register", help="register a model in the MLflow model registry")
    reg.add_argument("source", help="a model folder, a run folder or a sweep folder")
    reg.add_argument("--name", required=True, help="registered model name")
    reg.add_argument("--alias", help="alias to point at the new version (e.g. champion)")
    reg.add_argument("--tracking-uri", help="MLflow tracking/registry URI")
    reg.add_argument("--experiment", default="visionauto", help="experiment of the logged model")
    reg.add_argument("--description", help="note stored on the version")
    onnx = sub.add_parser("export-onnx", help="export a classification model to ONNX")
    onnx.add_argument("model", help="model/run/sweep folder or models:/NAME@alias")
    onnx.add_argument("--output", default="model.onnx", help="the .onnx file (labels.json beside)")
    onnx.add_argument("--tracking-uri", help="MLflow registry URI for models:/ references")
    onnx.add_argument(
        "--setting",
        action="append",
        metavar="KEY=VALUE",
        help="inference setting for the export, e.g. valid_crop_size=256 (repeatable)",
    )
    onnx.add_argument("--opset", type=int, default=18, help="ONNX opset version")
    onnx.add_argument(
        "--no-check", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison"
    )
    return parser


def _register(args: argparse.Namespace) -> None:
    from visionauto.packaging.registry import register_model

    version = register_model(
        args.source,
        name=args.name,
        alias=args.alias,
        tracking_uri=args.tracking_uri,
        experiment_name=args.experiment,
        description=args.description,
    )
    alias = f" (alias {version.alias})" if version.alias else ""
    print(f"registered {version.name} version {version.version}{alias} in {version.tracking_uri}")
    print(f"load it with: {version.ref}")


def _export_onnx(args: argparse.Namespace) -> None:
    import torch

    from visionauto.packaging.onnx_export import compare_with_onnxruntime, export_onnx
    from visionauto.packaging.predictor import load_predictor

    predictor = load_predictor(
        args.model,
        tracking_uri=args.tracking_uri,
        settings_overrides=parse_setting_pairs(args.setting),
        device="cpu",
    )
    result = export_onnx(predictor, Path(args.output), opset=args.opset)
    print(f"wrote {result.model_path} (input {result.input_shape}) and {result.labels_path}")
    if not args.no_check:
        crop = result.input_shape[-1]
        inputs = torch.randn(3, 3, crop, crop, generator=torch.Generator().manual_seed(0))
        diff = compare_with_onnxruntime(predictor, result.model_path, inputs)
        print(f"ONNX Runtime vs PyTorch: max abs difference {diff:.2e} on 3 random inputs")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for user errors, printed without a traceback)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[visionauto] %(message)s")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        if args.command == "register":
            _register(args)
        else:
            _export_onnx(args)
    except VisionAutoError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
