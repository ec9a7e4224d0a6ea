"""``python -m visionauto.predict``: batch scoring of a folder, JSONL file or MLTable folder.

Example::

    python -m visionauto.predict --model models:/fridge@champion --input photos/ \\
        --output predictions.jsonl --batch-size 32 --setting valid_crop_size=256

Writes one JSON line per image: Azure's per-task output (spec §4.2, e.g. ``probs`` and
``labels``) plus ``filename``. An image that cannot be read gets a line with ``error`` instead;
the job goes on. Labels in JSONL inputs are not needed (and not used).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionauto.errors import DataError, VisionAutoError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
log = logging.getLogger("visionauto.predict")


@dataclass(frozen=True)
class InputItem:
    """One image to score: ``filename`` as written to the output, ``ref`` to read it from.

    ``error`` is set for an input line that names no readable image (malformed JSONL line).
    """

    filename: str | None
    ref: str | None
    error: str | None = None
    source: str | None = None


def list_inputs(path: str | Path) -> list[InputItem]:
    """The images of a folder (recursive, sorted), a JSONL file or an MLTable folder/file.

    Raises:
        DataError: the input does not exist, is empty, or is a malformed MLTable.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(
            f"--input {path} does not exist: give a folder of images, a .jsonl file or an "
            "MLTable folder."
        )
    if path.is_dir() and not (path / "MLTable").is_file():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DataError(
                f"--input {path} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})."
            )
        return [InputItem(p.relative_to(path).as_posix(), str(p.resolve())) for p in files]
    return _records_as_items(path)


def _records_as_items(path: Path) -> list[InputItem]:
    from visionauto.data.jsonl import load_records

    # Scoring needs no label: read image_url as the "label" column so every line with an
    # image_url is kept (parsed as classification, which accepts any string).
    records, issues = load_records(path, task="classification", target_column_name="image_url")
    items = [InputItem(r.image, r.image, source=r.source) for r in records]
    for issue in issues:
        if issue.fatal_for_record:
            items.append(
                InputItem(None, None, error=f"{issue.message} ({issue.fix})", source=issue.location)
            )
    if not items:
        raise DataError(f"--input {path} lists no images: add lines with an image_url.")
    return sorted(items, key=_line_order)


def _line_order(item: InputItem) -> tuple[str, int]:
    file, _, line = (item.source or "").rpartition(":")
    return (file, int(line)) if line.isdigit() else (item.source or "", 0)


def _decode(item: InputItem) -> Any:
    """An RGB PIL image, or the error message (str) of an unreadable one."""
    from visionauto.data.images import load_image

    if item.error is not None:
        return item.error
    try:
        return load_image(item.ref)
    except DataError as err:
        return str(err)


def _batches(items: list[InputItem], size: int, workers: int) -> Iterator[list[tuple]]:
    """Yields ``[(item, image or error), ...]``; the next batch decodes while one is scored."""

    def collect(chunk: list[InputItem], futures: list[Future]) -> list[tuple]:
        return list(zip(chunk, [future.result() for future in futures], strict=True))

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="visionauto-read") as pool:
        pending: tuple[list[InputItem], list[Future]] | None = None
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            futures = [pool.submit(_decode, item) for item in chunk]
            if pending is not None:
                yield collect(*pending)
            pending = (chunk, futures)
        if pending is not None:
            yield collect(*pending)


def score_items(
    predictor: Any,
    items: list[InputItem],
    output: Path,
    *,
    batch_size: int,
    overrides: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[int, int]:
    """Scores ``items`` in batches and writes one JSON line each to ``output``.

    Returns:
        ``(scored, failed)`` image counts.
    """
    from tqdm import tqdm

    output.parent.mkdir(parents=True, exist_ok=True)
    scored = failed = 0
    workers = max(1, min(4, os.cpu_count() or 1))
    with (
        open(output, "w", encoding="utf-8") as handle,
        tqdm(total=len(items), unit="img", disable=not progress, desc="scoring") as bar,
    ):
        for batch in _batches(items, batch_size, workers):
            good = [(item, image) for item, image in batch if not isinstance(image, str)]
            results = iter(
                predictor.predict(
                    [image for _, image in good], overrides=overrides, batch_size=batch_size
                )
                if good
                else []
            )
            for item, image in batch:
                if isinstance(image, str):
                    line = {"filename": item.filename, "error": image}
                    if item.source:
                        line["source"] = item.source
                    failed += 1
                else:
                    line = {"filename": item.filename, **next(results)}
                    scored += 1
                handle.write(json.dumps(line) + "\n")
            handle.flush()
            bar.update(len(batch))
    return scored, failed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m visionauto.predict", description="Score a folder or JSONL of images."
    )
    parser.add_argument(
        "--model", required=True, help="model/run/sweep folder or models:/NAME@alias"
    )
    parser.add_argument("--input", required=True, help="folder of images, .jsonl or MLTable folder")
    parser.add_argument("--output", default="predictions.jsonl", help="JSONL file to write")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    parser.add_argument(
        "--setting",
        action="append",
        metavar="KEY=VALUE",
        help="inference setting for this job, e.g. valid_crop_size=256 (repeatable)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--tracking-uri", help="MLflow registry URI for models:/ references")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0 when done (even with unreadable images), 2 for bad arguments."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[visionauto] %(message)s")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        if args.batch_size < 1:
            raise DataError(f"--batch-size={args.batch_size} is invalid: expected >= 1.")
        items = list_inputs(args.input)
        scored, failed = _run(args, items)
    except VisionAutoError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    note = f", {failed} unreadable (lines with 'error')" if failed else ""
    print(f"scored {scored} images{note} -> {args.output}")
    return 0


def _run(args: argparse.Namespace, items: list[InputItem]) -> tuple[int, int]:
    import torch

    from visionauto.packaging.predictor import load_predictor, parse_setting_pairs

    overrides = parse_setting_pairs(args.setting)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    predictor = load_predictor(
        args.model, tracking_uri=args.tracking_uri, settings_overrides=overrides, device=device
    )
    return score_items(
        predictor,
        items,
        Path(args.output),
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )


if __name__ == "__main__":
    sys.exit(main())
