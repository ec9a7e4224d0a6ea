"""User-facing errors.

Every failure caused by the user's input (config, data, files, model names) is a
``VisionAutoError``. The CLI prints its message without a traceback and exits with code 2.
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class VisionAutoError(Exception):
    """Base class of errors the user can fix. ``str(err)`` is the full message (what, where, fix)."""

    exit_code = 2


class ConfigError(VisionAutoError):
    """A config value is unknown, out of range or inconsistent with another value."""


class DataError(VisionAutoError):
    """Input data cannot be read or does not pass validation."""


class DataValidationError(DataError):
    """The validation report found problems and the policy is ``on_invalid=error``.

    Attributes:
        report: the :class:`visionauto.data.validation.ValidationReport` with every problem.
    """

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class ModelError(VisionAutoError):
    """Unknown model name, unavailable pretrained weights, or a model/task mismatch."""


class CheckpointError(VisionAutoError):
    """A checkpoint for incremental training or loading cannot be used."""
