"""Arguments and runners of the object subcommands of ``python -m visionauto.data.convert``.

Each ``add_<name>_args`` adds the format's own flags (``--output`` and ``--base-url`` are added
by the parser for every JSONL converter); each ``run_<name>`` returns a
:class:`~visionauto.data.converters.common.Conversion`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from visionauto.data.converters.coco import convert_coco
from visionauto.data.converters.common import DEFAULT_MAX_POLYGON_POINTS, Conversion
from visionauto.data.converters.export import (
    CATEGORY_ORDERS,
    TASKS,
    coco_summary,
    jsonl_to_coco,
)
from visionauto.data.converters.labelme import convert_labelme
from visionauto.data.converters.masks import convert_voc_masks
from visionauto.data.converters.voc import convert_voc
from visionauto.data.converters.yolo import convert_yolo


def _positive_points(text: str) -> int:
    value = int(text)
    if value < 3:
        raise argparse.ArgumentTypeError(f"must be at least 3, got {value}")
    return value


def _add_max_points(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-number-of-polygon-points",
        "--max-polygon-points",
        dest="max_points",
        type=_positive_points,
        default=DEFAULT_MAX_POLYGON_POINTS,
        help="at most this many points per polygon traced from a mask (default 100, as Azure)",
    )


def _add_task(parser: argparse.ArgumentParser, default_help: str) -> None:
    parser.add_argument(
        "--task",
        choices=TASKS,
        default=None,
        help=f"write polygons (instance_segmentation) or boxes only (detection); {default_help}",
    )


def add_voc_args(parser: argparse.ArgumentParser) -> None:
    """Flags of ``voc``."""
    parser.add_argument(
        "--annotations", type=Path, required=True, help="folder of VOC .xml files, or one .xml"
    )
    parser.add_argument("--images", type=Path, required=True, help="folder holding the images")
    parser.add_argument(
        "--masks",
        type=Path,
        default=None,
        help="folder of SegmentationObject PNGs named like the XMLs (value k = k-th <object>, "
        "0 background, 255 void): writes instance segmentation polygons",
    )
    parser.add_argument(
        "--image-set",
        type=Path,
        default=None,
        help="VOC ImageSets file (e.g. ImageSets/Main/train.txt): convert only its ids",
    )
    _add_max_points(parser)


def run_voc(args: argparse.Namespace) -> Conversion:
    """Run ``voc``."""
    return convert_voc(
        args.annotations,
        args.images,
        args.output,
        base_url=args.base_url,
        masks=args.masks,
        image_set=args.image_set,
        max_points=args.max_points,
    )


def add_masks_args(parser: argparse.ArgumentParser) -> None:
    """Flags of ``masks``."""
    parser.add_argument(
        "--masks", type=Path, required=True, help="folder of SegmentationObject PNGs"
    )
    parser.add_argument(
        "--class-masks",
        type=Path,
        required=True,
        help="folder of SegmentationClass PNGs with the same file names",
    )
    parser.add_argument(
        "--classes",
        type=Path,
        required=True,
        help="class_names.txt: line i names class value i (line 0 is the background)",
    )
    parser.add_argument("--images", type=Path, required=True, help="folder holding the images")
    _add_max_points(parser)


def run_masks(args: argparse.Namespace) -> Conversion:
    """Run ``masks``."""
    return convert_voc_masks(
        args.masks,
        args.class_masks,
        args.classes,
        args.images,
        args.output,
        base_url=args.base_url,
        max_points=args.max_points,
    )


def add_coco_args(parser: argparse.ArgumentParser) -> None:
    """Flags of ``coco``."""
    parser.add_argument("--annotations", type=Path, required=True, help="COCO instances .json file")
    parser.add_argument(
        "--images", type=Path, required=True, help="folder that 'file_name' is relative to"
    )
    _add_task(parser, "default: instance_segmentation when any annotation has a segmentation")
    _add_max_points(parser)


def run_coco(args: argparse.Namespace) -> Conversion:
    """Run ``coco``."""
    return convert_coco(
        args.annotations,
        args.images,
        args.output,
        base_url=args.base_url,
        task=args.task,
        max_points=args.max_points,
    )


def add_yolo_args(parser: argparse.ArgumentParser) -> None:
    """Flags of ``yolo``."""
    parser.add_argument(
        "--annotations", type=Path, required=True, help="folder of YOLO .txt label files"
    )
    parser.add_argument("--images", type=Path, required=True, help="folder holding the images")
    parser.add_argument(
        "--classes",
        type=Path,
        default=None,
        help="data.yaml ('names' list or dict) or a text file with one class name per line; "
        "default: data.yaml / classes.txt found beside the labels",
    )


def run_yolo(args: argparse.Namespace) -> Conversion:
    """Run ``yolo``."""
    return convert_yolo(
        args.annotations, args.images, args.output, classes=args.classes, base_url=args.base_url
    )


def add_labelme_args(parser: argparse.ArgumentParser) -> None:
    """Flags of ``labelme``."""
    parser.add_argument(
        "--annotations", type=Path, required=True, help="folder of labelme .json files, or one"
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help="where to look for images that imagePath does not lead to (default: --annotations)",
    )
    _add_task(parser, "default: instance_segmentation when any shape is a polygon or circle")


def run_labelme(args: argparse.Namespace) -> Conversion:
    """Run ``labelme``."""
    return convert_labelme(
        args.annotations, args.output, images=args.images, base_url=args.base_url, task=args.task
    )


def add_to_coco_args(parser: argparse.ArgumentParser) -> None:
    """Flags of ``to-coco``."""
    parser.add_argument(
        "--input", type=Path, required=True, help="Azure JSONL file (or MLTable folder)"
    )
    parser.add_argument("--output", type=Path, required=True, help="COCO .json file to write")
    _add_task(parser, "default: instance_segmentation when any object has a polygon")
    parser.add_argument(
        "--category-order",
        choices=CATEGORY_ORDERS,
        default="sorted",
        help="order of category ids 1, 2, ...: sorted names (default) or first seen",
    )
    parser.add_argument(
        "--images-root",
        type=Path,
        default=None,
        help="write file_name relative to this folder (default: the output file's folder)",
    )
    parser.add_argument(
        "--datastore-root",
        default=None,
        help="local folder standing for the datastore of azureml:// image URLs",
    )


def run_to_coco(args: argparse.Namespace) -> str:
    """Run ``to-coco``; returns the summary to print."""
    coco = jsonl_to_coco(
        args.input,
        args.output,
        task=args.task,
        category_order=args.category_order,
        images_root=args.images_root,
        datastore_root=args.datastore_root,
    )
    return coco_summary(coco, args.output)
