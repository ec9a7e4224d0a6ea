"""``python -m visionauto.explain``: explain a classification model's predictions on image files.

Example::

    python -m visionauto.explain --model models:/fridge@champion --images photos/ cat.jpg \\
        --algorithm xrai --n-steps 50 --out explanations/

For each image (a folder is searched recursively) it writes, under ``--out``, the 2x2 figure
(``<name>.png``: input, heat map, blend, top-30% mask) and the attributions (``<name>.npy``,
f32[3, crop, crop]); multilabel models write ``<name>_<label>.png/.npy`` per class above the
threshold. ``explanations.jsonl`` lists every image with its probabilities and files. A line
per image shows progress; an unreadable image gets an ``error`` line and the job goes on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from visionauto.errors import ConfigError, DataError, VisionAutoError
from visionauto.explain.params import ALGORITHMS, APPROXIMATION_METHODS, ExplainParameters

SUMMARY_FILENAME = "explanations.jsonl"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m visionauto.explain",
        description="Explain a classification model's predictions (PNG figures + .npy arrays).",
    )
    parser.add_argument(
        "--model", required=True, help="model/run/sweep folder or models:/NAME@alias"
    )
    parser.add_argument(
        "--images", required=True, nargs="+", help="image files and/or folders (recursive)"
    )
    parser.add_argument("--out", required=True, help="folder to write the figures and arrays to")
    parser.add_argument("--algorithm", default="xrai", help=f"one of {', '.join(ALGORITHMS)}")
    parser.add_argument("--n-steps", type=int, default=50, help="IG steps (xrai, IG), >= 2")
    parser.add_argument(
        "--no-xrai-fast", action="store_true", help="the full (slower, more precise) XRAI"
    )
    parser.add_argument(
        "--approximation-method",
        default="riemann_middle",
        help=f"IG approximation: {' or '.join(APPROXIMATION_METHODS[:2])}",
    )
    parser.add_argument(
        "--threshold", type=float, default=0.5, help="multilabel: explain each class above it"
    )
    parser.add_argument(
        "--setting",
        action="append",
        metavar="KEY=VALUE",
        help="inference setting, e.g. valid_crop_size=256 (repeatable)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--tracking-uri", help="MLflow registry URI for models:/ references")
    return parser


def list_images(paths: list[str]) -> list[tuple[Path, str]]:
    """``(file, output name)`` of every image: files as given, folders searched recursively.

    The output name is the file's stem, or its path under the given folder without suffix.

    Raises:
        DataError: a path does not exist, a folder holds no images, or two inputs would write
            the same output name.
    """
    from visionauto.predict import IMAGE_SUFFIXES

    found: list[tuple[Path, str]] = []
    for text in paths:
        path = Path(text).expanduser()
        if path.is_file():
            found.append((path, path.stem))
        elif path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not files:
                raise DataError(
                    f"--images {path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})."
                )
            found.extend((p, p.relative_to(path).with_suffix("").as_posix()) for p in files)
        else:
            raise DataError(f"--images {path} does not exist: give image files or folders.")
    seen: dict[str, Path] = {}
    for file, name in found:
        if name in seen:
            raise DataError(
                f"{seen[name]} and {file} would both write {name}.png: rename one, or explain "
                "them in separate runs with different --out folders."
            )
        seen[name] = file
    return found


def _parameters(args: argparse.Namespace) -> ExplainParameters:
    return ExplainParameters(
        algorithm=args.algorithm,
        n_steps=args.n_steps,
        xrai_fast=not args.no_xrai_fast,
        approximation_method=args.approximation_method,
        visualizations=True,
        attributions=True,
        confidence_score_threshold_multilabel=args.threshold,
    )


def explain_one(
    predictor: Any, file: Path, name: str, out: Path, params: ExplainParameters
) -> dict[str, Any]:
    """Explains one image file; writes its PNG(s) and .npy file(s); returns its summary line.

    Raises:
        DataError: the image cannot be read.
    """
    import numpy as np

    from visionauto.data.images import load_image
    from visionauto.explain.explainer import explain_images

    result = explain_images(predictor, [load_image(str(file))], params)[0]
    explained = []
    for explanation in result.explanations:
        stem = name
        if predictor.task == "multilabel":
            stem = f"{name}_{_UNSAFE.sub('_', explanation.label)}"
        png, npy = out / f"{stem}.png", out / f"{stem}.npy"
        png.parent.mkdir(parents=True, exist_ok=True)
        result.figure(explanation).save(png)
        np.save(npy, explanation.attribution)
        explained.append(
            {
                "label": explanation.label,
                "probability": explanation.probability,
                "png": str(png),
                "npy": str(npy),
            }
        )
    return {"filename": str(file), "probs": result.probs, "labels": result.labels,
            "explained": explained}  # fmt: skip


def _describe(line: dict[str, Any]) -> str:
    if not line["explained"]:
        return "no class above the threshold, nothing written"
    parts = [f"{e['label']} {e['probability']:.2f} -> {e['png']}, .npy" for e in line["explained"]]
    return "; ".join(parts)


def run(args: argparse.Namespace) -> tuple[int, int]:
    """Loads the model and explains every image; returns ``(explained, unreadable)`` counts."""
    import torch

    from visionauto.explain.explainer import check_explainable
    from visionauto.packaging.predictor import load_predictor, parse_setting_pairs

    params = _parameters(args)
    images = list_images(args.images)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    predictor = load_predictor(
        args.model,
        tracking_uri=args.tracking_uri,
        settings_overrides=parse_setting_pairs(args.setting),
        device=device,
    )
    check_explainable(predictor, params)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done = failed = 0
    with open(out / SUMMARY_FILENAME, "w", encoding="utf-8") as summary:
        for number, (file, name) in enumerate(images, start=1):
            start = time.perf_counter()
            try:
                line = explain_one(predictor, file, name, out, params)
            except DataError as err:
                line, failed = {"filename": str(file), "error": str(err)}, failed + 1
                print(f"[{number}/{len(images)}] {file}: error: {err}", flush=True)
            else:
                done += 1
                seconds = time.perf_counter() - start
                print(f"[{number}/{len(images)}] {file}: {_describe(line)} ({seconds:.1f} s)")
            summary.write(json.dumps(line) + "\n")
            summary.flush()
    return done, failed


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0 when done (even with unreadable images), 2 for bad arguments or models."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[visionauto] %(message)s")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise ConfigError(f"--out {args.out} is a file: give a folder.")
        done, failed = run(args)
    except VisionAutoError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    note = f", {failed} unreadable (lines with 'error')" if failed else ""
    print(f"explained {done} images{note} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
