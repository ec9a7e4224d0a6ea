"""Convert labeled images and common annotation formats into Azure JSONL (spec §3.3).

Usage::

    python -m visionauto.data.convert folder --images <root> --output train.jsonl
    python -m visionauto.data.convert folder --images <flat dir> --label-from-filename --output x.jsonl
    python -m visionauto.data.convert csv --labels labels.csv --images <dir> --output train.jsonl
    python -m visionauto.data.convert voc --annotations Annotations/ --images JPEGImages/ \
        [--masks SegmentationObject/] --output train.jsonl
    python -m visionauto.data.convert masks --masks SegmentationObject/ \
        --class-masks SegmentationClass/ --classes class_names.txt --images JPEGImages/ --output x.jsonl
    python -m visionauto.data.convert coco --annotations instances.json --images <dir> --output x.jsonl
    python -m visionauto.data.convert yolo --annotations labels/ --images images/ --output x.jsonl
    python -m visionauto.data.convert labelme --annotations <dir of .json> --output x.jsonl
    python -m visionauto.data.convert to-coco --input train.jsonl --output coco.json

``image_url`` is written relative to the output file's folder (or ``--base-url`` + the path
relative to ``--images``), with ``image_details`` (format, width, height) read from each image.
The object formats live in :mod:`visionauto.data.converters`; they print a summary (images,
objects per class, skipped objects and why) and warn on stderr about every skipped object.
Bad input stops with a message naming every bad file or CSV line and exit code 2.
To add a format: write ``_add_<name>_args`` and ``_convert_<name>`` (or their counterparts in
``converters/cli.py``) and add a row to ``CONVERTERS``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionauto.data.converters import cli as objects
from visionauto.data.converters.common import IMAGE_EXTENSIONS, Conversion
from visionauto.data.converters.common import image_url as _image_url
from visionauto.data.converters.common import is_image_file as _is_image
from visionauto.data.converters.common import raise_bad as _raise_bad
from visionauto.data.images import read_image_size
from visionauto.errors import DataError, VisionAutoError

_NAME_NUMBER = re.compile(r"^(?P<label>.+)_\d+$")


@dataclass(frozen=True)
class Item:
    """One image to write: its file, its label and where it came from (for error messages)."""

    path: Path
    label: Any
    location: str


def _require_dir(path: Path, flag: str) -> None:
    if not path.is_dir():
        raise DataError(f"{flag} {path} is not a folder: give the folder that holds the images.")


def build_lines(
    items: list[Item], output: Path, images_root: Path, base_url: str | None = None
) -> list[dict[str, Any]]:
    """JSONL objects of ``items`` with ``image_details`` read from each file.

    Raises:
        DataError: listing every item whose file is missing or not a readable image.
    """
    lines, bad = [], []
    for item in items:
        try:
            width, height, _ = read_image_size(item.path)
        except DataError as err:
            bad.append(f"{item.location}: {err}")
            continue
        lines.append(
            {
                "image_url": _image_url(item.path, output, images_root, base_url),
                "label": item.label,
                "image_details": {
                    "format": item.path.suffix.lower().lstrip("."),
                    "width": width,
                    "height": height,
                },
            }
        )
    if bad:
        _raise_bad("unreadable image(s)", bad, "Fix or remove these files and rerun.")
    return lines


# --- folder: one subfolder per class, or flat files named <class>_<n>.<ext> ---------------------


def _add_folder_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--images",
        type=Path,
        required=True,
        help="root folder with one subfolder per class (multiclass)",
    )
    parser.add_argument(
        "--label-from-filename",
        action="store_true",
        help="flat folder: the label is the file name before its last '_<n>' "
        "(e.g. milk_bottle_12.jpg -> milk_bottle)",
    )


def _class_folder_items(root: Path) -> list[Item]:
    items = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in folder.iterdir() if _is_image(p))
        if not files:
            print(f"warning: class folder {folder} holds no images; skipped", file=sys.stderr)
        items.extend(Item(p, folder.name, str(p)) for p in files)
    if not items:
        flat = any(_is_image(p) for p in root.iterdir())
        hint = (
            " It holds images directly: use --label-from-filename for files named <class>_<n>.jpg."
            if flat
            else ""
        )
        raise DataError(
            f"no images found in class subfolders of {root} (expected "
            f"{root}/<class>/<image>.jpg).{hint}"
        )
    return items


def _filename_items(root: Path) -> list[Item]:
    files = sorted(p for p in root.iterdir() if _is_image(p))
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {root}.")
    items, bad = [], []
    for path in files:
        match = _NAME_NUMBER.match(path.stem)
        if match is None:
            bad.append(f"{path}: name does not end in _<number>")
        else:
            items.append(Item(path, match.group("label"), str(path)))
    if bad:
        _raise_bad(
            "file name(s) without a label",
            bad,
            "Rename them to <class>_<number>.<ext> or move them out of the folder.",
        )
    return items


def _convert_folder(args: argparse.Namespace) -> list[dict[str, Any]]:
    _require_dir(args.images, "--images")
    items = (
        _filename_items(args.images)
        if args.label_from_filename
        else _class_folder_items(args.images)
    )
    return build_lines(items, args.output, args.images, args.base_url)


# --- csv: multilabel, header "filename,labels", labels separated by spaces ----------------------


def _add_csv_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--labels",
        type=Path,
        required=True,
        help="CSV with the header 'filename,labels'; labels separated by spaces",
    )
    parser.add_argument("--images", type=Path, required=True, help="folder holding the images")


def _csv_items(labels: Path, images: Path) -> list[Item]:
    try:
        text = labels.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise DataError(f"cannot read --labels {labels}: {err}") from None
    reader = csv.reader(text.splitlines())
    header = [cell.strip().lower() for cell in next(reader, [])]
    if header != ["filename", "labels"]:
        raise DataError(
            f"{labels}:1: expected the header 'filename,labels', got "
            f"{','.join(header) or 'an empty file'!r}. Add that header line."
        )
    items, bad, seen = [], [], set()
    for row in reader:
        location = f"{labels}:{reader.line_num}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != 2 or not row[0].strip():
            bad.append(f"{location}: expected 'filename,labels', got {','.join(row)!r}")
            continue
        name = row[0].strip()
        path = images / name
        if name in seen:
            bad.append(f"{location}: {name} is listed twice")
        elif not path.is_file():
            bad.append(f"{location}: image {path} does not exist")
        else:
            seen.add(name)
            items.append(Item(path, list(dict.fromkeys(row[1].split())), location))
    if bad:
        _raise_bad("bad CSV row(s)", bad, "Fix these rows (or the --images folder) and rerun.")
    if not items:
        raise DataError(f"{labels} lists no images below its header.")
    return items


def _convert_csv(args: argparse.Namespace) -> list[dict[str, Any]]:
    _require_dir(args.images, "--images")
    return build_lines(
        _csv_items(args.labels, args.images), args.output, args.images, args.base_url
    )


@dataclass(frozen=True)
class Converter:
    """One subcommand: its help line, its arguments and the function producing JSONL objects
    (a list of lines, or a :class:`Conversion` with the skipped objects for its summary)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    convert: Callable[[argparse.Namespace], list[dict[str, Any]] | Conversion]


CONVERTERS: dict[str, Converter] = {
    "folder": Converter(
        "multiclass: one subfolder per class (or --label-from-filename)",
        _add_folder_args,
        _convert_folder,
    ),
    "csv": Converter(
        "multilabel: CSV 'filename,labels' with space-separated labels", _add_csv_args, _convert_csv
    ),
    "voc": Converter(
        "detection (or instance segmentation with --masks): Pascal VOC XML files",
        objects.add_voc_args,
        objects.run_voc,
    ),
    "masks": Converter(
        "instance segmentation: VOC SegmentationObject + SegmentationClass PNGs",
        objects.add_masks_args,
        objects.run_masks,
    ),
    "coco": Converter(
        "detection / instance segmentation: COCO instances JSON (polygons, RLE)",
        objects.add_coco_args,
        objects.run_coco,
    ),
    "yolo": Converter(
        "detection: YOLO txt labels + data.yaml (or --classes)",
        objects.add_yolo_args,
        objects.run_yolo,
    ),
    "labelme": Converter(
        "instance segmentation / detection: labelme JSON files",
        objects.add_labelme_args,
        objects.run_labelme,
    ),
}
TO_COCO = "to-coco"


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m visionauto.data.convert`` argument parser (one subcommand per format)."""
    parser = argparse.ArgumentParser(
        prog="python -m visionauto.data.convert",
        description="Convert labeled images to Azure JSONL.",
    )
    commands = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
    for name, converter in CONVERTERS.items():
        sub = commands.add_parser(name, help=converter.help, description=converter.help)
        converter.add_arguments(sub)
        sub.add_argument("--output", type=Path, required=True, help="JSONL file to write")
        sub.add_argument(
            "--base-url",
            default=None,
            help="write image_url as BASE_URL/<path relative to --images> (e.g. an "
            "azureml:// datastore path) instead of a path relative to --output",
        )
    help_text = "export: Azure JSONL -> COCO instances JSON"
    sub = commands.add_parser(TO_COCO, help=help_text, description=help_text)
    objects.add_to_coco_args(sub)
    return parser


def _class_count(lines: list[dict[str, Any]]) -> int:
    names: set[str] = set()
    for line in lines:
        label = line["label"]
        if isinstance(label, str):
            names.add(label)
        else:
            names.update(x["label"] if isinstance(x, dict) else x for x in label)
    return len(names)


def write_jsonl(lines: list[dict[str, Any]], output: Path) -> None:
    """Write one compact JSON object per line (creates the folder)."""
    text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as err:
        raise DataError(f"cannot write --output {output}: {err}") from None


def main(argv: list[str] | None = None) -> int:
    """Run the converter CLI; returns the exit code (2 on bad input, with a message)."""
    args = build_parser().parse_args(argv)
    try:
        if args.format == TO_COCO:
            print(objects.run_to_coco(args))
            return 0
        result = CONVERTERS[args.format].convert(args)
        lines = result.lines if isinstance(result, Conversion) else result
        write_jsonl(lines, args.output)
    except VisionAutoError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    if isinstance(result, Conversion):
        for warning in result.warning_lines():
            print(warning, file=sys.stderr)
        print(result.summary(args.output))
    else:
        print(f"{len(lines)} images, {_class_count(lines)} classes, written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
