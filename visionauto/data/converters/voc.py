"""Pascal VOC XML (+ optional ``SegmentationObject`` masks) -> Azure JSONL lines.

What real VOC files hold and how it is read:

- ``<size><width>/<height>`` may be missing, empty or wrong: the real image size is read from
  the file header and the annotation's size is used to normalize only when the boxes fit it
  and not the real size (see :func:`~visionauto.data.converters.common.image_info`).
- ``<bndbox>`` values may be floats (``91.0``, ``107.369``); they are divided by the width /
  height as written (VOC's 1-based corners are kept as they are, as Azure's converter does).
- ``<difficult>`` becomes ``isCrowd`` (as Azure's converter does: both are left out of the
  metrics); empty tags (``<difficult/>``, ``<pose/>``) mean 0 / nothing.
- ``<filename>`` / ``<path>`` often point at the labeler's machine: the image is looked up under
  ``--images`` by relative path, then by file name, then by the XML's stem.
- Zero-area and inverted boxes are skipped with a warning naming the file and the object.
- With masks, the k-th ``<object>`` is the pixels of value k in ``<masks>/<xml stem>.png``
  (0 background, 255 void); its polygons come from ``mask_to_polygons``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from visionauto.data.converters.common import (
    DEFAULT_MAX_POLYGON_POINTS,
    Conversion,
    ImageFinder,
    format_box,
    image_info,
    image_url,
    make_object,
    normalize_box,
    raise_bad,
    require_path,
)
from visionauto.data.converters.masks import (
    check_mask_size,
    instance_values,
    mask_box,
    mask_polygons,
    read_value_mask,
)
from visionauto.errors import DataError

_BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")
_TRUE = ("1", "true", "yes")


def _text(element: ET.Element | None, tag: str) -> str | None:
    """Stripped text of a child; None for a missing or empty tag."""
    child = element.find(tag) if element is not None else None
    text = child.text.strip() if child is not None and child.text else ""
    return text or None


def _box(obj: ET.Element) -> tuple[float, float, float, float] | None:
    values = []
    for tag in _BOX_TAGS:
        try:
            values.append(float(_text(obj.find("bndbox"), tag) or "nan"))
        except ValueError:
            return None
    if any(v != v for v in values):  # NaN: tag missing or empty
        return None
    return values[0], values[1], values[2], values[3]


def _xml_files(annotations: Path, image_set: Path | None) -> list[Path]:
    if annotations.is_file():
        return [annotations]
    if image_set is None:
        files = sorted(annotations.rglob("*.xml"))
        if not files:
            raise DataError(f"no .xml files in --annotations {annotations}.")
        return files
    require_path(image_set, "--image-set", folder=False)
    # VOC ImageSets files hold "<id>" or "<id> <1|-1|0>" per line.
    ids = [line.split()[0] for line in image_set.read_text().splitlines() if line.strip()]
    missing = [i for i in ids if not (annotations / f"{i}.xml").is_file()]
    if missing:
        raise_bad(
            f"id(s) of {image_set} without an XML in {annotations}",
            missing,
            "Fix --image-set or --annotations.",
        )
    return [annotations / f"{i}.xml" for i in ids]


def _parse(xml: Path) -> ET.Element:
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as err:
        raise DataError(f"not valid XML ({err})") from None
    except OSError as err:
        raise DataError(f"cannot read it ({err})") from None
    if root.tag != "annotation":
        raise DataError(f"the root element is <{root.tag}>, not <annotation>")
    return root


def _read_objects(root: ET.Element, xml: Path, conv: Conversion) -> list[dict[str, Any]]:
    """Every ``<object>`` with a name: ``{"index", "name", "crowd", "box" (pixels or None)}``."""
    objects = []
    for index, obj in enumerate(root.findall("object"), start=1):
        name = _text(obj, "name")
        if name is None:
            conv.skip(f"{xml}: object {index}", "no <name>")
            continue
        crowd = int((_text(obj, "difficult") or "0").lower() in _TRUE)
        objects.append({"index": index, "name": name, "crowd": crowd, "box": _box(obj)})
    return objects


def _box_objects(
    objects: list[dict[str, Any]], frame: tuple[float, float], xml: Path, conv: Conversion
) -> list[dict[str, Any]]:
    out = []
    for obj in objects:
        where = f"{xml}: object {obj['index']} {obj['name']!r}"
        if obj["box"] is None:
            conv.skip(where, "no numeric <bndbox> xmin/ymin/xmax/ymax")
            continue
        box, problem, clipped = normalize_box(obj["box"], frame)
        if box is None:
            conv.skip(where, problem or "bad box", format_box(obj["box"]))
            continue
        conv.clipped += clipped
        out.append(make_object(obj["name"], box, obj["crowd"]))
    return out


def _mask_objects(
    objects: list[dict[str, Any]],
    frame: tuple[float, float],
    mask_path: Path,
    size: tuple[int, int],
    conv: Conversion,
    max_points: int,
) -> list[dict[str, Any]]:
    instances = read_value_mask(mask_path)
    check_mask_size(instances, size[0], size[1], mask_path)
    by_index = {obj["index"]: obj for obj in objects}
    extra = [v for v in instance_values(instances) if v not in by_index]
    if extra:
        conv.warnings.append(
            f"{mask_path}: instance value(s) {extra} match no <object> of the XML; ignored"
        )
    out = []
    for obj in objects:
        where = f"{mask_path}: object {obj['index']} {obj['name']!r}"
        instance = instances == obj["index"]
        polygon = mask_polygons(instance, max_points) if instance.any() else []
        if not polygon:
            reason = "mask too small for a polygon" if instance.any() else "no pixels in the mask"
            conv.skip(where, reason, f"(value {obj['index']})")
            continue
        box, _, clipped = normalize_box(obj["box"], frame) if obj["box"] else (None, None, False)
        conv.clipped += clipped
        out.append(make_object(obj["name"], box or mask_box(instance), obj["crowd"], polygon))
    return out


def _voc_line(
    xml: Path,
    finder: ImageFinder,
    conv: Conversion,
    masks: Path | None,
    max_points: int,
) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    root = _parse(xml)
    image = finder.find([_text(root, "filename"), _text(root, "path")], [xml.stem])
    objects = _read_objects(root, xml, conv)
    boxes = [o["box"] for o in objects if o["box"] is not None]
    extent = (max((b[2] for b in boxes), default=0.0), max((b[3] for b in boxes), default=0.0))
    annotated = (_text(root, "size/width"), _text(root, "size/height"))
    info = image_info(image, annotated, extent, conv.warnings, str(xml))
    if masks is None:
        return info.path, info.details(), _box_objects(objects, info.frame, xml, conv)
    mask_path = masks / f"{xml.stem}.png"
    size = (info.width, info.height)
    labels = _mask_objects(objects, info.frame, mask_path, size, conv, max_points)
    return info.path, info.details(), labels


def convert_voc(
    annotations: Path,
    images: Path,
    output: Path,
    *,
    base_url: str | None = None,
    masks: Path | None = None,
    image_set: Path | None = None,
    max_points: int = DEFAULT_MAX_POLYGON_POINTS,
) -> Conversion:
    """Convert Pascal VOC XML files to Azure JSONL lines (detection, or segmentation with masks).

    Args:
        annotations: a folder of ``.xml`` files (searched recursively) or one ``.xml`` file.
        images: folder holding the images.
        output: the JSONL file to be written (``image_url`` is relative to its folder).
        base_url: write ``image_url`` as ``base_url/<path relative to images>`` instead.
        masks: folder of ``SegmentationObject`` PNGs named like the XMLs: objects get polygons.
        image_set: a VOC ``ImageSets`` file: convert only the ids it lists, in its order.
        max_points: at most this many points per polygon segment (masks only).

    Returns:
        The lines, one per XML in file-name order, with skipped objects and warnings.

    Raises:
        DataError: listing every XML that is unreadable, has no image, or whose mask is unusable.
    """
    require_path(annotations, "--annotations")
    require_path(images, "--images", folder=True)
    if masks is not None:
        require_path(masks, "--masks", folder=True)
    finder, conv, bad = ImageFinder(images), Conversion("voc"), []
    for xml in _xml_files(annotations, image_set):
        try:
            path, details, labels = _voc_line(xml, finder, conv, masks, max_points)
        except DataError as err:
            bad.append(f"{xml}: {err}")
            continue
        line = {"image_url": image_url(path, output, images, base_url), "image_details": details}
        conv.lines.append({**line, "label": labels})
    if bad:
        raise_bad("unusable annotation file(s)", bad, "Fix or remove these files and rerun.")
    if masks is not None:
        conv.notes.append("instance_segmentation: polygons from the masks")
    return conv
