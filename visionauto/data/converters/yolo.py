"""YOLO txt labels + class names -> Azure JSONL lines.

- One line per image under ``--images`` (searched recursively). Its label file is
  ``<annotations>/<same relative path>.txt`` (``images/train/a.jpg`` <-> ``labels/train/a.txt``)
  or else the only ``a.txt`` anywhere under ``--annotations``. Images without one get ``[]``.
- Label lines: ``class cx cy w h`` (normalized; a 6th value, a prediction's confidence, is
  ignored) or the segmentation form ``class x1 y1 x2 y2 ...`` (>= 3 points), which also
  writes ``polygon``.
- Class names: ``--classes`` (a ``data.yaml`` or a text file with one name per line), else the
  first ``data.yaml`` / ``dataset.yaml`` / ``classes.txt`` / ``obj.names`` found in the
  annotations folder, its parent, the images folder or its parent. ``names`` may be a list or a
  dict ``{0: cat, 1: dog}``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from visionauto.data.converters.common import (
    MAX_LISTED,
    Conversion,
    image_info,
    image_url,
    is_image_file,
    make_object,
    normalize_box,
    normalize_segments,
    raise_bad,
    require_path,
    segments_box,
)
from visionauto.errors import DataError

CLASS_FILES = ("data.yaml", "dataset.yaml", "classes.txt", "obj.names")
_SLACK = 0.01  # normalized values up to 1.01 are rounding noise and get clipped


def _names_from_yaml(path: Path) -> dict[int, str]:
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise DataError(f"cannot read class names from {path}: {err}") from None
    names = spec.get("names") if isinstance(spec, dict) else None
    if isinstance(names, list):
        return {i: str(n) for i, n in enumerate(names)}
    if isinstance(names, dict):
        try:
            return {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise DataError(f"{path}: 'names' keys must be class numbers (0, 1, ...).") from None
    raise DataError(f"{path} has no 'names' list or dict: add 'names: [cat, dog]'.")


def load_class_names(path: Path) -> dict[int, str]:
    """Class names by class number from a ``data.yaml`` or a one-name-per-line text file.

    Raises:
        DataError: the file is unreadable or holds no names.
    """
    if path.suffix.lower() in (".yaml", ".yml"):
        names = _names_from_yaml(path)
    else:
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except OSError as err:
            raise DataError(f"cannot read class names from {path}: {err}") from None
        names = {i: line.strip() for i, line in enumerate(lines) if line.strip()}
    if not names:
        raise DataError(f"{path} holds no class names.")
    return names


def _find_class_file(annotations: Path, images: Path) -> Path:
    folders = dict.fromkeys([annotations, annotations.parent, images, images.parent])
    for folder in folders:
        for name in CLASS_FILES:
            if (folder / name).is_file():
                return folder / name
    raise DataError(
        f"no class names: pass --classes (data.yaml or names.txt) or put data.yaml in "
        f"{annotations} or its parent folder."
    )


def _label_files(annotations: Path, exclude: set[Path]) -> list[Path]:
    return sorted(
        p
        for p in annotations.rglob("*.txt")
        if p.name not in CLASS_FILES and p.resolve() not in exclude
    )


def _matcher(annotations: Path, labels: list[Path]) -> Callable[[Path], Path | None]:
    """``match(image path relative to --images) -> its label file or None``."""
    by_stem: dict[str, list[Path]] = {}
    for path in labels:
        by_stem.setdefault(path.stem, []).append(path)

    def match(relative: Path) -> Path | None:
        mirrored = annotations / relative.with_suffix(".txt")
        if mirrored.is_file():
            return mirrored
        found = by_stem.get(relative.stem, [])
        return found[0] if len(found) == 1 else None

    return match


def _values(tokens: list[str]) -> list[float] | None:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        return None


def _parse_line(
    tokens: list[str], names: dict[int, str], where: str, conv: Conversion
) -> dict[str, Any] | None:
    values = _values(tokens)
    if values is None or len(values) < 5 or (len(values) > 6 and len(values) % 2 == 0):
        conv.skip(
            where, "not 'class cx cy w h' nor 'class x1 y1 x2 y2 ...'", repr(" ".join(tokens))
        )
        return None
    if not values[0].is_integer() or int(values[0]) not in names:
        conv.skip(where, f"class {tokens[0]} is not in the class names (0..{max(names)})")
        return None
    name, coords = names[int(values[0])], values[1:]
    checked = coords[:4] if len(values) <= 6 else coords
    if any(not -_SLACK <= v <= 1 + _SLACK for v in checked):
        conv.skip(where, "coordinates are not normalized to [0, 1]", repr(" ".join(tokens)))
        return None
    if len(values) > 6:
        polygon = normalize_segments([coords], (1.0, 1.0))
        box, problem, clipped = normalize_box(segments_box(polygon), (1.0, 1.0))
    else:
        cx, cy, w, h = coords[:4]
        polygon = None
        corners = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        box, problem, clipped = normalize_box(corners, (1.0, 1.0))
    if box is None:
        conv.skip(where, problem or "bad box", repr(" ".join(tokens)))
        return None
    conv.clipped += clipped
    return make_object(name, box, 0, polygon)


def _read_labels(path: Path, names: dict[int, str], conv: Conversion) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read label file {path}: {err}") from None
    objects = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            obj = _parse_line(line.split(), names, f"{path}:{number}", conv)
            if obj is not None:
                objects.append(obj)
    return objects


def convert_yolo(
    annotations: Path,
    images: Path,
    output: Path,
    *,
    classes: Path | None = None,
    base_url: str | None = None,
) -> Conversion:
    """Convert YOLO label files to Azure JSONL lines (one per image).

    Args:
        annotations: folder of ``.txt`` label files (searched recursively).
        images: folder of images (searched recursively).
        output: the JSONL file to be written (``image_url`` is relative to its folder).
        classes: ``data.yaml`` or names file; None = look for one (see the module docstring).
        base_url: write ``image_url`` as ``base_url/<path relative to images>`` instead.

    Raises:
        DataError: no class names, no images, or listing every unreadable image / label file.
    """
    require_path(annotations, "--annotations", folder=True)
    require_path(images, "--images", folder=True)
    class_file = classes or _find_class_file(annotations, images)
    require_path(class_file, "--classes", folder=False)
    names = load_class_names(class_file)
    labels = _label_files(annotations, {class_file.resolve()})
    match = _matcher(annotations, labels)
    files = sorted(p for p in images.rglob("*") if is_image_file(p))
    if not files:
        raise DataError(f"no images found under --images {images}.")
    conv, bad, used = Conversion("yolo"), [], set()
    conv.notes.append(f"class names from {class_file}")
    for file in files:
        label_file = match(file.relative_to(images))
        try:
            info = image_info(file, None, (0.0, 0.0), conv.warnings, str(file))
            objects = _read_labels(label_file, names, conv) if label_file else []
        except DataError as err:
            bad.append(f"{file}: {err}")
            continue
        used.add(label_file)
        url = image_url(info.path, output, images, base_url)
        conv.lines.append({"image_url": url, "image_details": info.details(), "label": objects})
    if bad:
        raise_bad("unusable image(s) or label file(s)", bad, "Fix or remove them and rerun.")
    orphans = [str(p) for p in labels if p not in used]
    if orphans:
        listed = ", ".join(orphans[:MAX_LISTED]) + (", ..." if len(orphans) > MAX_LISTED else "")
        conv.warnings.append(f"{len(orphans)} label file(s) match no image: {listed}")
    return conv
