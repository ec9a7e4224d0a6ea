"""The "validate data" step of a job: read, check, apply the policy, split, write the clean split.

Outputs (under ``out_dir``): ``validation_report.json`` / ``.txt`` (always, also on failure),
``data/train.jsonl``, ``data/validation.jsonl`` and ``data/classes.json``. Trials then read the
clean split with :func:`load_prepared` (``data.prepared=true``) without validating again.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from visionauto.config.schema import DataConfig
from visionauto.data.jsonl import load_records, write_records
from visionauto.data.records import ImageRecord, record_classes
from visionauto.data.split import split_records
from visionauto.data.validation import Issue, ValidationReport, validate_records
from visionauto.errors import DataError, DataValidationError

log = logging.getLogger(__name__)

MIN_TRAIN_IMAGES = 10
_DROP_HINT = "fix the records listed above, or rerun with data.on_invalid=drop to skip them"


@dataclass
class PreparedData:
    """Where the validated split was written, the class names and the validation report."""

    train_path: Path
    validation_path: Path
    class_names: list[str]
    report: ValidationReport


@dataclass
class _Part:
    """One input (train or validation) after reading and checking."""

    valid: list[ImageRecord]
    issues: list[Issue]
    n_records: int


def _read_and_check(
    path: str, cfg: DataConfig, task: str, known_classes: list[str] | None
) -> _Part:
    records, load_issues = load_records(
        path,
        task=task,
        target_column_name=cfg.target_column_name,
        datastore_root=cfg.datastore_root,
    )
    valid, issues = validate_records(records, task=task, known_classes=known_classes)
    unparsed = {i.location for i in load_issues if i.fatal_for_record}
    return _Part(valid, load_issues + issues, len(records) + len(unparsed))


def _job_issue(code: str, message: str, location: str, fix: str) -> Issue:
    return Issue(code, message, location, fix, fatal_for_record=True)


def _job_issues(
    train: _Part, val: _Part | None, classes: list[str], task: str, cfg: DataConfig, train_loc: str
) -> list[Issue]:
    """Problems of the data set as a whole; these always stop the job."""
    issues = []
    # With on_invalid=error the user fixes the bad records, so count them too.
    n_bad = train.n_records - len(train.valid)
    n_train = len(train.valid) if cfg.on_invalid == "drop" else train.n_records
    if n_train < MIN_TRAIN_IMAGES:
        dropped = f" ({n_bad} invalid records dropped)" if cfg.on_invalid == "drop" else ""
        issues.append(
            _job_issue(
                "too_few_images",
                f"only {n_train} usable training image(s){dropped}; at least "
                f"{MIN_TRAIN_IMAGES} are needed",
                train_loc,
                "add training images (Azure's guidance: 10-15 per class, more with more classes)",
            )
        )
    if not classes and train.valid:
        issues.append(
            _job_issue(
                "no_classes",
                "the training labels name no class",
                train_loc,
                "label the training images",
            )
        )
    elif task in ("classification", "multilabel") and len(classes) == 1:
        issues.append(
            _job_issue(
                "too_few_classes",
                f"the training data has one class only ({classes[0]!r})",
                train_loc,
                "add images of at least one more class",
            )
        )
    if val is not None and not val.valid:
        issues.append(
            _job_issue(
                "empty_validation",
                "no usable validation record is left",
                str(cfg.validation),
                "fix the validation data, or leave "
                "data.validation unset to split the training data",
            )
        )
    return issues


def _missing_class_issues(
    classes: list[str], val_records: list[ImageRecord], task: str, location: str
) -> list[Issue]:
    seen = {name for r in val_records for name in record_classes(r, task)}
    return [
        Issue(
            "class_without_validation",
            f"class {name!r} has no validation image, so its metrics are undefined",
            location,
            "add validation images of this class (or at least 2 training images, so the automatic "
            "split can hold one out)",
            fatal_for_record=False,
        )
        for name in classes
        if name not in seen
    ]


def _classes_of(records: list[ImageRecord], task: str) -> list[str]:
    return sorted({name for r in records for name in record_classes(r, task)})


def _fail(report: ValidationReport, out_dir: Path, hint: str) -> DataValidationError:
    report.save(out_dir)
    text = report.to_text()
    return DataValidationError(
        f"{text}\n{hint}\n(full report: {out_dir / 'validation_report.txt'})", report
    )


def prepare_data(
    cfg: DataConfig, *, task: str, validation_data_size: float, seed: int, out_dir: Path
) -> PreparedData:
    """Validate the job's data, apply ``cfg.on_invalid``, split it, and write the clean split.

    Args:
        cfg: the ``data`` config (``train``, optional ``validation``, ``on_invalid``...).
        task: ``classification``, ``multilabel``, ``detection`` or ``instance_segmentation``.
        validation_data_size: fraction held out when ``cfg.validation`` is not set.
        seed: seed of that split.
        out_dir: the run folder; receives the report and ``data/``.

    Returns:
        The paths of the written split, the sorted training class names and the report.

    Raises:
        DataError: ``data.train`` is not set or a file cannot be read.
        DataValidationError: a job-level problem (too few images, no classes), or invalid
            records with ``on_invalid=error``. The report is saved before raising.
    """
    if cfg.train is None:
        raise DataError(
            "data.train is not set: give the training data as "
            "data.train=<file.jsonl or MLTable folder>."
        )
    out_dir = Path(out_dir)
    train = _read_and_check(cfg.train, cfg, task, known_classes=None)
    classes = _classes_of(train.valid, task)
    val = _read_and_check(cfg.validation, cfg, task, classes) if cfg.validation else None
    record_issues = train.issues + (val.issues if val else [])
    job_issues = _job_issues(train, val, classes, task, cfg, str(cfg.train))
    n_records = train.n_records + (val.n_records if val else 0)
    n_valid = len(train.valid) + (len(val.valid) if val else 0)
    stop_for_records = cfg.on_invalid == "error" and any(i.fatal_for_record for i in record_issues)
    dropped = n_records - n_valid if cfg.on_invalid == "drop" else 0
    report = ValidationReport(
        record_issues + job_issues, n_records=n_records, n_valid=n_valid, n_dropped=dropped
    )
    if job_issues or stop_for_records:
        hints = [_DROP_HINT] if stop_for_records else []
        if job_issues:
            hints.append(
                f"{', '.join(sorted({i.code for i in job_issues}))}: the data set as a "
                "whole cannot be used; dropping records does not help."
            )
        raise _fail(report, out_dir, "\n".join(hints))

    if val is not None:
        train_part, val_part = train.valid, val.valid
    else:
        train_part, val_part = split_records(
            train.valid, task=task, validation_data_size=validation_data_size, seed=seed
        )
    if task == "classification":
        location = str(cfg.validation or cfg.train)
        report.issues.extend(_missing_class_issues(classes, val_part, task, location))
    report.save(out_dir)
    _log_outcome(report, out_dir)
    return _write_split(out_dir, train_part, val_part, classes, report)


def _log_outcome(report: ValidationReport, out_dir: Path) -> None:
    """Say how many records were dropped and why, and one line per kind of warning."""
    if report.n_dropped:
        why = Counter(i.code for i in report.issues if i.fatal_for_record)
        log.warning(
            "data: dropped %d of %d records (%s); see %s",
            report.n_dropped,
            report.n_records,
            ", ".join(f"{code}: {n}" for code, n in why.most_common()),
            out_dir / "validation_report.txt",
        )
    warnings = [i for i in report.issues if not i.fatal_for_record]
    for code, count in Counter(i.code for i in warnings).most_common():
        first = next(i for i in warnings if i.code == code)
        more = f" (and {count - 1} more like it)" if count > 1 else ""
        log.warning("data warning (%s) %s: %s%s", code, first.location, first.message, more)


def _write_split(
    out_dir: Path,
    train: list[ImageRecord],
    val: list[ImageRecord],
    classes: list[str],
    report: ValidationReport,
) -> PreparedData:
    data_dir = out_dir / "data"
    train_path, val_path = data_dir / "train.jsonl", data_dir / "validation.jsonl"
    write_records(train, train_path)
    write_records(val, val_path)
    (data_dir / "classes.json").write_text(json.dumps(classes) + "\n", encoding="utf-8")
    return PreparedData(train_path, val_path, classes, report)


def load_prepared(
    cfg: DataConfig, *, task: str
) -> tuple[list[ImageRecord], list[ImageRecord], list[str]]:
    """Read a split written by :func:`prepare_data` (no validation: it was done by the job).

    Returns:
        ``(train_records, validation_records, class_names)``; the class names come from
        ``classes.json`` beside ``cfg.train``.

    Raises:
        DataError: a path is not set, a file is missing, or the files were edited badly.
    """
    if not cfg.train or not cfg.validation:
        raise DataError(
            "data.prepared=true needs data.train and data.validation (the files "
            "written by the job's data step under <run>/data/)."
        )
    parts = []
    for path in (cfg.train, cfg.validation):
        records, issues = load_records(
            path, task=task, target_column_name="label", datastore_root=cfg.datastore_root
        )
        fatal = [i for i in issues if i.fatal_for_record]
        if fatal:
            raise DataError(
                f"prepared data {path} is damaged: {fatal[0].location}: "
                f"{fatal[0].message}. Rerun the job's data step (data.prepared=false)."
            )
        parts.append(records)
    classes_file = Path(cfg.train).parent / "classes.json"
    try:
        classes = json.loads(classes_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(
            f"cannot read the class list {classes_file}: {err}. Rerun the job's data "
            "step (data.prepared=false)."
        ) from None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{classes_file} must hold a JSON list of class names.")
    return parts[0], parts[1], classes
