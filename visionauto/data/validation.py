"""Check records and collect every problem in one pass into a report (what, where, how to fix).

Record-level problems (a missing or corrupt image, an empty or unknown label) are
:class:`Issue` objects with ``fatal_for_record=True``: ``data.on_invalid=drop`` drops that record.
Warnings (``fatal_for_record=False``) keep the record, e.g. ``image_details`` that disagree with
the real image size (the real size is used).

Detection and instance segmentation objects (boxes, polygons) are checked one by one
(:mod:`visionauto.data.validation_objects`): an invalid object is an error that stops the job
with ``on_invalid=error``, while ``on_invalid=drop`` removes only that object and keeps the image
(the record passed on no longer holds it).
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from visionauto.data.images import load_image
from visionauto.data.records import (
    CLASSIFICATION_TASKS,
    OBJECT_TASKS,
    ImageRecord,
    parse_object_label,
    record_classes,
)
from visionauto.data.urls import is_remote
from visionauto.errors import DataError


@dataclass(frozen=True)
class Issue:
    """One problem found in the data.

    Attributes:
        code: a stable name, e.g. ``"corrupt_image"``, ``"unknown_label"``, ``"too_few_images"``.
        message: what is wrong.
        location: where, e.g. ``"/data/train.jsonl:42"`` (a file for job-level problems).
        fix: how to fix it.
        fatal_for_record: an error: ``on_invalid=error`` stops the job, ``on_invalid=drop``
            drops the record, or only the object for the object-level codes of
            :mod:`visionauto.data.validation_objects`. False for a warning.
    """

    code: str
    message: str
    location: str
    fix: str
    fatal_for_record: bool = True


@dataclass
class ValidationReport:
    """Every problem of a data set plus counts; saved beside the run as JSON and text."""

    issues: list[Issue]
    n_records: int
    n_valid: int
    n_dropped: int = 0

    def ok(self) -> bool:
        """True when no issue is fatal (warnings allowed)."""
        return not any(issue.fatal_for_record for issue in self.issues)

    def counts(self) -> dict[str, int]:
        """Number of issues per code, most frequent first."""
        return dict(Counter(issue.code for issue in self.issues).most_common())

    def to_text(self, max_per_code: int = 5) -> str:
        """Human-readable summary: counts per code, the first few locations and the fix."""
        lines = [
            f"Data validation: {self.n_records} records, {self.n_valid} valid, "
            f"{self.n_dropped} dropped, {len(self.issues)} problem(s)."
        ]
        by_code: dict[str, list[Issue]] = defaultdict(list)
        for issue in self.issues:
            by_code[issue.code].append(issue)
        # Errors first, then warnings; the most frequent first within each.
        for code, issues in sorted(
            by_code.items(),
            key=lambda item: (not any(i.fatal_for_record for i in item[1]), -len(item[1])),
        ):
            kind = "error" if any(i.fatal_for_record for i in issues) else "warning"
            lines.append(f"- {code} ({kind}, {len(issues)}):")
            for issue in issues[:max_per_code]:
                lines.append(f"    {issue.location}: {issue.message}")
            if len(issues) > max_per_code:
                lines.append(f"    ... and {len(issues) - max_per_code} more")
            lines.append(f"  fix: {issues[0].fix}")
        return "\n".join(lines)

    def save(self, out_dir: Path) -> None:
        """Write ``validation_report.json`` and ``validation_report.txt`` into ``out_dir``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "n_records": self.n_records,
            "n_valid": self.n_valid,
            "n_dropped": self.n_dropped,
            "ok": self.ok(),
            "counts": self.counts(),
            "issues": [asdict(issue) for issue in self.issues],
        }
        (out_dir / "validation_report.json").write_text(json.dumps(payload, indent=2) + "\n")
        (out_dir / "validation_report.txt").write_text(self.to_text(max_per_code=20) + "\n")


# Codes about one detection / segmentation object: on_invalid=drop removes the object, not the image
# (checked in visionauto.data.validation_objects).
OBJECT_ISSUE_CODES = frozenset(
    {
        "box_out_of_range",
        "box_inverted",
        "zero_area_box",
        "polygon_too_few_points",
        "polygon_odd_coordinates",
        "polygon_out_of_range",
        "zero_area_polygon",
        "polygon_self_intersection",
    }
)

_TASK_FIX = {
    "classification": 'write one class name per image, e.g. "label": "can"',
    "multilabel": 'write a list of class names per image, e.g. "label": ["can", "carton"] '
    "([] for an image with none of the classes)",
    "detection": 'write a list of boxes, e.g. "label": [{"label": "can", "topX": 0.1, '
    '"topY": 0.2, "bottomX": 0.5, "bottomY": 0.6}] ([] for an image without objects)',
    "instance_segmentation": 'write a list of objects with polygons, e.g. "label": '
    '[{"label": "can", "polygon": [[0.1, 0.2, 0.5, 0.2, 0.3, 0.6]]}]',
}


def _label_issues(record: ImageRecord, task: str) -> list[Issue]:
    """Problems with the form of one record's label (not with its class names)."""
    label, loc, fix = record.label, record.source, _TASK_FIX[task]
    if task == "classification":
        if label is None or (isinstance(label, str) and not label.strip()):
            return [Issue("empty_label", "the label is empty", loc, fix)]
        if not isinstance(label, str):
            return [
                Issue(
                    "invalid_label",
                    f"the label {label!r} is not one class name "
                    "(for several labels per image use task=multilabel)",
                    loc,
                    fix,
                )
            ]
        return []
    if not isinstance(label, list):
        return [Issue("label_not_list", f"the label {label!r} is not a list", loc, fix)]
    if task == "multilabel":
        bad = [v for v in label if not isinstance(v, str) or not v.strip()]
        if bad:
            return [
                Issue(
                    "empty_label",
                    f"the label list {label!r} holds empty or non-text entries {bad!r}",
                    loc,
                    fix,
                )
            ]
        return []
    try:
        parse_object_label(label, task=task)
    except ValueError as err:
        return [Issue("invalid_object", str(err), loc, fix)]
    return []


def _class_issues(record: ImageRecord, task: str, known: set[str]) -> list[Issue]:
    unknown = sorted(set(record_classes(record, task)) - known)
    if not unknown:
        return []
    return [
        Issue(
            "unknown_label",
            f"class {', '.join(map(repr, unknown))} does not occur in the training data",
            record.source,
            "use only classes of the training data in the validation data (check the spelling), "
            "or add training images of that class",
        )
    ]


def _image_issues(record: ImageRecord) -> tuple[list[Issue], tuple[int, int] | None]:
    """Decode the image fully; return problems and the real (EXIF-corrected) size."""
    if not is_remote(record.image) and not os.path.isfile(record.image):
        return [
            Issue(
                "missing_image",
                f"image file {record.image} does not exist",
                record.source,
                "fix image_url (relative paths are relative to the JSONL file's folder) "
                "or add the file",
            )
        ], None
    try:
        image = load_image(record.image)
    except DataError as err:
        code = "unreadable_image" if is_remote(record.image) else "corrupt_image"
        return [
            Issue(
                code,
                str(err),
                record.source,
                "replace the file with a readable image (JPEG, PNG, BMP, TIFF...) "
                "or remove the record",
            )
        ], None
    size = image.size
    issues = []
    given = (record.width, record.height)
    if None not in given and given != size:
        issues.append(
            Issue(
                "image_details_mismatch",
                f"image_details say {given[0]}x{given[1]} but the image is {size[0]}x{size[1]} "
                "(after EXIF rotation); the real size is used",
                record.source,
                "correct image_details.width/height or leave them out",
                fatal_for_record=False,
            )
        )
    return issues, size


def _check_images(records: list[ImageRecord]) -> list[tuple[list[Issue], tuple[int, int] | None]]:
    # Pillow releases the GIL while decoding, so threads overlap I/O and decoding.
    workers = min(16, 2 * (os.cpu_count() or 1), max(1, len(records)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_image_issues, records))


def _given_size(record: ImageRecord) -> tuple[int, int] | None:
    if record.width is None or record.height is None:
        return None
    return record.width, record.height


def _drops_record(issue: Issue) -> bool:
    return issue.fatal_for_record and issue.code not in OBJECT_ISSUE_CODES


def validate_records(
    records: list[ImageRecord],
    *,
    task: str,
    known_classes: Iterable[str] | None = None,
    check_images: bool = True,
) -> tuple[list[ImageRecord], list[Issue]]:
    """Check every record and collect every problem (never stops at the first).

    Args:
        records: records as read by :func:`visionauto.data.jsonl.load_records`.
        task: ``classification``, ``multilabel``, ``detection`` or ``instance_segmentation``.
        known_classes: the training classes; labels outside it are ``unknown_label`` (give it
            for validation data). None = accept any class.
        check_images: open and fully decode every image (catches truncated files).

    Returns:
        ``(valid, issues)``: the records without a fatal issue, in input order, with
        ``width``/``height`` set to the real image size when images were checked (object labels
        come back parsed, clipped, and without the objects that were dropped); and all issues.
    """
    if task not in CLASSIFICATION_TASKS + OBJECT_TASKS:
        raise ValueError(f"unknown task {task!r}")
    known = set(known_classes) if known_classes is not None else None
    per_record = [_label_issues(record, task) for record in records]
    label_ok = [not issues for issues in per_record]
    if known is not None:
        for issues, record in zip(per_record, records, strict=True):
            if not issues:
                issues.extend(_class_issues(record, task, known))
    sizes: list[tuple[int, int] | None] = [None] * len(records)
    if check_images:
        for index, (issues, size) in enumerate(_check_images(records)):
            per_record[index].extend(issues)
            sizes[index] = size
    cleaned: list[ImageRecord | None] = list(records)
    if task in OBJECT_TASKS:
        # Imported here: it pulls in scikit-image and pycocotools, which classification skips.
        from visionauto.data.validation_objects import check_objects

        for index, record in enumerate(records):
            if label_ok[index]:
                # The image size sets how far outside [0, 1] still counts as annotation noise.
                size = sizes[index] or _given_size(record)
                cleaned[index], object_issues = check_objects(record, task, image_size=size)
                per_record[index].extend(object_issues)
    valid: list[ImageRecord] = []
    all_issues: list[Issue] = []
    for record, issues, size in zip(cleaned, per_record, sizes, strict=True):
        all_issues.extend(issues)
        if record is None or any(_drops_record(issue) for issue in issues):
            continue
        if size is not None and size != (record.width, record.height):
            record = replace(record, width=size[0], height=size[1])
        valid.append(record)
    return valid, all_issues
