"""Read Azure JSONL files and MLTable folders into :class:`ImageRecord` lists; write them back.

A malformed line, a missing ``image_url`` or label, or a label that cannot be parsed is an
:class:`Issue` (reported with the others), never an exception. Only problems that concern the
whole input (file not found, an MLTable without ``paths``, ``azureml://`` URLs without
``data.datastore_root``) raise :class:`DataError`.
"""

from __future__ import annotations

import glob
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from visionauto.data.records import (
    CLASSIFICATION_TASKS,
    ImageRecord,
    parse_class_label,
    parse_object_label,
)
from visionauto.data.urls import MissingDatastoreRootError, resolve_image_url, url_scheme
from visionauto.data.validation import Issue
from visionauto.errors import DataError

_PIXELS = re.compile(r"^\s*(\d+)\s*(px)?\s*$", re.IGNORECASE)
_MLTABLE_HINT = (
    "data.train / data.validation must be a .jsonl file or an MLTable folder (a folder holding "
    "a file named exactly 'MLTable' with 'paths: [{file: ./train.jsonl}]')"
)


def _parse_pixels(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _PIXELS.match(value) if isinstance(value, str) else None
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def _image_details(raw: Any, loc: str) -> tuple[int | None, int | None, str | None, list[Issue]]:
    if raw is None:
        return None, None, None, []
    if not isinstance(raw, dict):
        return (
            None,
            None,
            None,
            [
                Issue(
                    "invalid_image_details",
                    f"image_details {raw!r} is not an object; it is ignored",
                    loc,
                    'write "image_details": {"format": "jpg", "width": 640, "height": 480}',
                    fatal_for_record=False,
                )
            ],
        )
    issues = []
    sizes = []
    for key in ("width", "height"):
        value = raw.get(key)
        parsed = _parse_pixels(value)
        if value is not None and parsed is None:
            issues.append(
                Issue(
                    "invalid_image_details",
                    f"image_details.{key}={value!r} is not a positive "
                    "number of pixels; it is ignored",
                    loc,
                    'write a positive integer or a string like "400px"',
                    fatal_for_record=False,
                )
            )
        sizes.append(parsed)
    fmt = raw.get("format")
    fmt = fmt.strip().lower().lstrip(".") if isinstance(fmt, str) and fmt.strip() else None
    return sizes[0], sizes[1], fmt, issues


def _missing(field: str, loc: str, fix: str) -> Issue:
    return Issue("missing_field", f"the record has no {field!r}", loc, fix)


def _parse_line(
    line: str, loc: str, *, task: str, target: str, base_dir: Path, datastore_root: str | None
) -> tuple[ImageRecord | None, list[Issue]]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        return None, [
            Issue(
                "malformed_json",
                f"not valid JSON: {err}",
                loc,
                "write one complete JSON object per line",
            )
        ]
    if not isinstance(obj, dict):
        return None, [
            Issue(
                "malformed_json",
                f"the line is a JSON {type(obj).__name__}, not an object",
                loc,
                "write one JSON object per line",
            )
        ]
    issues = []
    if "image_url" not in obj:
        issues.append(_missing("image_url", loc, 'add "image_url": "<path or URL of the image>"'))
    if target not in obj:
        issues.append(
            _missing(
                target,
                loc,
                f'add the label column "{target}" (or set '
                "data.target_column_name to the column holding the labels)",
            )
        )
    if issues:
        return None, issues
    try:
        image = resolve_image_url(
            obj["image_url"], base_dir=base_dir, datastore_root=datastore_root
        )
    except MissingDatastoreRootError:
        raise
    except DataError as err:
        return None, [
            Issue(
                "invalid_image_url",
                str(err),
                loc,
                "write a local path, file://, azureml:// or http(s):// URL",
            )
        ]
    if task in CLASSIFICATION_TASKS:
        label = parse_class_label(obj[target], task=task)
    else:
        try:
            label = parse_object_label(obj[target], task=task)
        except ValueError as err:
            code = "label_not_list" if not isinstance(obj[target], list) else "invalid_object"
            return None, [
                Issue(
                    code,
                    str(err),
                    loc,
                    "write the label in Azure's form: a list of "
                    'objects like {"label": "can", "topX": 0.1, "topY": 0.2, '
                    '"bottomX": 0.5, "bottomY": 0.6}',
                )
            ]
    width, height, fmt, detail_issues = _image_details(obj.get("image_details"), loc)
    record = ImageRecord(
        image=image, label=label, source=loc, width=width, height=height, image_format=fmt
    )
    return record, detail_issues


def _read_jsonl(
    path: Path, *, task: str, target: str, datastore_root: str | None, encoding: str = "utf-8"
) -> tuple[list[ImageRecord], list[Issue]]:
    records: list[ImageRecord] = []
    issues: list[Issue] = []
    base_dir = path.parent
    try:
        text = path.read_text(encoding=encoding)
    except (UnicodeDecodeError, LookupError) as err:
        raise DataError(f"{path} is not {encoding} text ({err}): save it as UTF-8.") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err}") from None
    # split("\n"), not splitlines(): U+2028 and friends may occur inside JSON strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        record, line_issues = _parse_line(
            line,
            f"{path}:{number}",
            task=task,
            target=target,
            base_dir=base_dir,
            datastore_root=datastore_root,
        )
        issues.extend(line_issues)
        if record is not None:
            records.append(record)
    return records, issues


def _mltable_encoding(transformations: list, mltable: Path) -> str:
    """Text encoding of ``read_json_lines``; other readers cannot hold image records."""
    encoding = "utf-8"
    for step in transformations:
        name = next(iter(step), None) if isinstance(step, dict) else step
        if name in ("read_delimited", "read_parquet", "read_delta_lake"):
            raise DataError(
                f"{mltable} uses '{name}': image data must be JSON lines "
                "(transformation 'read_json_lines')."
            )
        if name == "read_json_lines" and isinstance(step.get(name), dict):
            encoding = str(step[name].get("encoding", "utf8")).replace("utf8", "utf-8")
    return encoding


def _mltable_files(mltable: Path, datastore_root: str | None) -> tuple[list[Path], str]:
    """The JSONL files an MLTable file names (spec §3.2) and their text encoding."""
    try:
        spec = yaml.safe_load(mltable.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise DataError(f"{mltable} is not valid YAML: {err}") from None
    paths = spec.get("paths") if isinstance(spec, dict) else None
    if not paths or not isinstance(paths, list):
        raise DataError(
            f"{mltable} has no 'paths': add 'paths: [{{file: ./train.jsonl}}]' "
            "naming the JSONL file(s) next to it."
        )
    encoding = _mltable_encoding(spec.get("transformations") or [], mltable)
    files: list[Path] = []
    for entry in paths:
        if not isinstance(entry, dict) or not ({"file", "folder", "pattern"} & entry.keys()):
            raise DataError(
                f"{mltable}: each entry of 'paths' needs 'file', 'folder' or "
                f"'pattern' (got {entry!r})."
            )
        kind, value = next((k, entry[k]) for k in ("file", "folder", "pattern") if k in entry)
        if url_scheme(str(value)) not in (None, "file", "azureml"):
            raise DataError(
                f"{mltable}: remote path {value!r} is not supported; download it "
                "and point 'paths' at the local file."
            )
        resolved = Path(
            resolve_image_url(str(value), base_dir=mltable.parent, datastore_root=datastore_root)
        )
        if kind == "file":
            files.append(resolved)
        elif kind == "folder":
            files.extend(sorted(resolved.glob("*.jsonl")))
        else:
            files.extend(sorted(Path(p) for p in glob.glob(str(resolved), recursive=True)))
    if not files:
        raise DataError(f"{mltable}: 'paths' matches no JSONL file.")
    return files, encoding


def load_records(
    path: str | Path,
    *,
    task: str,
    target_column_name: str = "label",
    datastore_root: str | None = None,
) -> tuple[list[ImageRecord], list[Issue]]:
    """Read a JSONL file or an MLTable folder (or the ``MLTable`` file itself).

    Args:
        path: a ``.jsonl`` file, a folder holding a file named ``MLTable``, or that file.
        task: ``classification``, ``multilabel``, ``detection`` or ``instance_segmentation``.
        target_column_name: the JSON key that holds the label.
        datastore_root: local folder standing for the datastore of ``azureml://`` URLs.

    Returns:
        ``(records, issues)``: records that could be parsed, in file order; one issue per
        unusable line (malformed JSON, missing field, unparsable detection label) and warnings.

    Raises:
        DataError: the path does not exist, an MLTable is malformed, or ``azureml://`` URLs
            are used without ``datastore_root``.
    """
    path = Path(os.path.expanduser(str(path))).absolute()
    if not path.exists():
        raise DataError(f"data file {path} does not exist: {_MLTABLE_HINT}.")
    kwargs = {"task": task, "target": target_column_name, "datastore_root": datastore_root}
    if path.is_dir() or path.name == "MLTable":
        mltable = path / "MLTable" if path.is_dir() else path
        if not mltable.is_file():
            raise DataError(f"folder {path} has no file named 'MLTable': {_MLTABLE_HINT}.")
        files, encoding = _mltable_files(mltable, datastore_root)
        records: list[ImageRecord] = []
        issues: list[Issue] = []
        for file in files:
            if not file.is_file():
                raise DataError(f"{mltable} names {file}, which does not exist: fix 'paths'.")
            more, more_issues = _read_jsonl(file, encoding=encoding, **kwargs)
            records.extend(more)
            issues.extend(more_issues)
        return records, issues
    return _read_jsonl(path, **kwargs)


def record_to_json(record: ImageRecord) -> dict[str, Any]:
    """The JSONL object of one record: ``image_url``, ``label`` and ``image_details`` if known."""
    obj: dict[str, Any] = {"image_url": record.image, "label": record.label}
    details = {
        k: v
        for k, v in (
            ("format", record.image_format),
            ("width", record.width),
            ("height", record.height),
        )
        if v is not None
    }
    if details:
        obj["image_details"] = details
    return obj


def write_records(records: list[ImageRecord], path: Path) -> None:
    """Write records as compact JSON lines (``load_records`` reads them back identically).

    The file is written to a temporary name and renamed, so a reader never sees half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            line = json.dumps(record_to_json(record), ensure_ascii=False, separators=(",", ":"))
            handle.write(line + "\n")
    os.replace(tmp, path)
