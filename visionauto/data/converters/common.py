"""Pieces shared by the JSONL converters: image lookup and size, normalized objects, summary.

Coordinates: every converter turns an annotation's pixel coordinates into Azure's normalized
corners (``topX = xmin / width`` ...), clipped to [0, 1] and rounded to 6 decimals. The width and
height used for that are the ones of the *frame the annotation describes* (see
:func:`image_info`); ``image_details`` always gives the real image size.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from visionauto.data.images import read_image_size
from visionauto.errors import DataError

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".gif",
    ".webp",
)
MAX_LISTED = 20
DECIMALS = 6
DEFAULT_MAX_POLYGON_POINTS = 100  # Azure's max_number_of_polygon_points default
# Coordinates may pass the frame by this much (pixels + relative) and still count as inside it:
# VOC boxes are 1-based, so xmax == width + 1 happens in real files.
_FIT_SLACK_PX = 1.5
_FIT_SLACK_REL = 0.01


def is_image_file(path: Path) -> bool:
    """A visible file whose extension is one of :data:`IMAGE_EXTENSIONS`."""
    return (
        path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS
    )


def raise_bad(what: str, problems: list[str], fix: str) -> NoReturn:
    """Raise one :class:`DataError` listing up to 20 problems, their total and the fix."""
    listed = problems[:MAX_LISTED]
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    raise DataError(f"{len(problems)} {what}:\n  " + "\n  ".join(listed) + more + f"\n{fix}")


def image_url(path: Path, output: Path, images_root: Path, base_url: str | None) -> str:
    """``image_url`` of ``path``: relative to the output file's folder (posix), or
    ``base_url`` + the path relative to ``images_root``."""
    if base_url:
        relative = Path(os.path.relpath(path.absolute(), images_root.absolute()))
        return base_url.rstrip("/") + "/" + relative.as_posix()
    return Path(os.path.relpath(path.absolute(), output.absolute().parent)).as_posix()


def require_path(path: Path, flag: str, *, folder: bool | None = None) -> None:
    """Raise a :class:`DataError` when ``path`` is missing (or not a folder / not a file)."""
    if not path.exists():
        raise DataError(f"{flag} {path} does not exist: check the path.")
    if folder is True and not path.is_dir():
        raise DataError(f"{flag} {path} is not a folder: give the folder, not a file.")
    if folder is False and not path.is_file():
        raise DataError(f"{flag} {path} is a folder: give the file.")


def _last_name(text: str) -> str:
    """File name of a path written on any system (``C:\\a\\b.jpg`` and ``/a/b.jpg`` alike)."""
    return re.split(r"[\\/]", text.strip())[-1]


class ImageFinder:
    """Find an image under a root from the names an annotation gives (which may point elsewhere).

    Lookup order: ``root / name`` for each candidate; then a unique file with the same base name
    anywhere below the root (case-insensitive); then a unique image with the same stem.
    The index of the root is built once, on the first miss.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_name: dict[str, list[Path]] | None = None
        self._by_stem: dict[str, list[Path]] | None = None

    def _index(self) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
        if self._by_name is None or self._by_stem is None:
            self._by_name, self._by_stem = {}, {}
            for path in sorted(self.root.rglob("*")):
                if is_image_file(path):
                    self._by_name.setdefault(path.name.lower(), []).append(path)
                    self._by_stem.setdefault(path.stem.lower(), []).append(path)
        return self._by_name, self._by_stem

    def find(self, names: Iterable[str | None], stems: Iterable[str | None] = ()) -> Path:
        """The image file for the first name (then stem) that matches.

        Args:
            names: file names or paths as written in the annotation (relative to the root,
                absolute elsewhere, Windows style...). None and empty entries are ignored.
            stems: file names without extension to try last (e.g. the annotation file's stem).

        Raises:
            DataError: nothing matches, or a name matches several files.
        """
        names = [n for n in names if n and n.strip()]
        for name in names:
            direct = self.root / name.strip().replace("\\", "/")
            if not Path(name).is_absolute() and is_image_file(direct):
                return direct
        by_name, by_stem = self._index()
        keys = [(by_name, _last_name(n).lower()) for n in names]
        keys += [(by_stem, s.lower()) for s in stems if s]
        for table, key in keys:
            found = table.get(key, [])
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                listed = ", ".join(str(p) for p in found[:3])
                raise DataError(
                    f"image {key!r} matches {len(found)} files under {self.root} ({listed}); "
                    "point --images at the folder that holds only the right one."
                )
        tried = ", ".join(repr(n) for n in [*names, *(s for s in stems if s)]) or "no name"
        raise DataError(
            f"no image for {tried} under --images {self.root}: add the image or fix the path."
        )


@dataclass(frozen=True)
class ImageInfo:
    """An image file with its real size and the frame its annotation's pixels refer to."""

    path: Path
    width: int
    height: int
    frame: tuple[float, float]

    def details(self) -> dict[str, Any]:
        """``image_details`` of the JSONL line (format from the file extension, real size)."""
        fmt = self.path.suffix.lower().lstrip(".")
        return {"format": fmt, "width": self.width, "height": self.height}


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _fits(extent: tuple[float, float], frame: tuple[float, float]) -> bool:
    return all(
        e <= f * (1 + _FIT_SLACK_REL) + _FIT_SLACK_PX for e, f in zip(extent, frame, strict=True)
    )


def image_info(
    path: Path,
    annotated: tuple[Any, Any] | None,
    extent: tuple[float, float],
    warnings: list[str],
    location: str,
) -> ImageInfo:
    """Read the image's real size (header only) and pick the frame to normalize by.

    The real size is used, except when the annotation gives another positive width/height
    and the objects fit inside that frame but not inside the real one (the pixels were counted
    in that frame, e.g. images downscaled after labeling). A disagreement is added to
    ``warnings``; an unusable size (``0``, text) too.

    Args:
        path: the image file.
        annotated: ``(width, height)`` written in the annotation, None when it has none.
        extent: the largest x and y pixel coordinate of the annotation's objects.
        warnings: list to append a warning to.
        location: the annotation file (for the warning).

    Raises:
        DataError: the image is missing or its header is unreadable.
    """
    width, height, _ = read_image_size(path)
    real = (float(width), float(height))
    claimed = tuple(_positive(v) for v in annotated) if annotated else (None, None)
    frame = real
    if None not in claimed and claimed != real:
        claimed_frame = (float(claimed[0]), float(claimed[1]))  # type: ignore[arg-type]
        use_claimed = _fits(extent, claimed_frame) and not _fits(extent, real)
        frame = claimed_frame if use_claimed else real
        used = "the annotation's size" if use_claimed else "the real size"
        warnings.append(
            f"{location}: the annotation says {claimed[0]:g}x{claimed[1]:g} but {path.name} is "
            f"{width}x{height}; coordinates normalized by {used}, image_details give the real size"
        )
    elif annotated and None in claimed and any(v not in (None, "") for v in annotated):
        warnings.append(
            f"{location}: image size {annotated[0]!r}x{annotated[1]!r} is not usable; "
            f"the real size {width}x{height} is used"
        )
    return ImageInfo(path, width, height, frame)


def box_problem(box: Sequence[float]) -> str | None:
    """Why a pixel box ``(x0, y0, x1, y1)`` cannot be an object, or None."""
    x0, y0, x1, y1 = box
    if x1 == x0 or y1 == y0:
        return "zero-area box"
    if x1 < x0 or y1 < y0:
        return "inverted box (max < min)"
    return None


def format_box(box: Sequence[float]) -> str:
    """``(504, 337, 504, 337)``: a pixel box for messages."""
    return "(" + ", ".join(f"{v:g}" for v in box) + ")"


def _clip_round(value: float) -> float:
    return round(min(max(value, 0.0), 1.0), DECIMALS)


def normalize_box(
    box: Sequence[float], frame: tuple[float, float]
) -> tuple[tuple[float, float, float, float] | None, str | None, bool]:
    """Pixel corners -> normalized, clipped, rounded corners.

    Returns:
        ``(box, problem, clipped)``: the normalized box or None with the reason it is unusable,
        and whether clipping to the image changed it.
    """
    problem = box_problem(box)
    if problem:
        return None, problem, False
    raw = (box[0] / frame[0], box[1] / frame[1], box[2] / frame[0], box[3] / frame[1])
    out = tuple(_clip_round(v) for v in raw)
    if out[2] <= out[0] or out[3] <= out[1]:
        return None, "box outside the image", True
    clipped = any(v < 0.0 or v > 1.0 for v in raw)
    return out, None, clipped  # type: ignore[return-value]


def normalize_segments(
    segments: Iterable[Sequence[float]], frame: tuple[float, float]
) -> list[list[float]]:
    """Pixel polygon segments -> normalized, clipped, rounded; segments under 3 points dropped."""
    out = []
    for segment in segments:
        values = [float(v) for v in segment[: len(segment) // 2 * 2]]
        if len(values) < 6:
            continue
        out.append([_clip_round(v / frame[i % 2]) for i, v in enumerate(values)])
    return out


def round_segments(segments: Iterable[Sequence[float]]) -> list[list[float]]:
    """Already normalized segments, clipped and rounded (e.g. from ``mask_to_polygons``)."""
    return [[_clip_round(float(v)) for v in s] for s in segments if len(s) >= 6]


def segments_box(segments: Sequence[Sequence[float]]) -> tuple[float, float, float, float]:
    """Normalized box around normalized segments (the caller guarantees at least one point)."""
    xs = [v for s in segments for v in s[0::2]]
    ys = [v for s in segments for v in s[1::2]]
    return min(xs), min(ys), max(xs), max(ys)


def make_object(
    name: str,
    box: Sequence[float],
    crowd: int,
    polygon: list[list[float]] | None = None,
) -> dict[str, Any]:
    """One Azure object: label, normalized corners, isCrowd and (segmentation) polygon."""
    obj: dict[str, Any] = {
        "label": name,
        "topX": box[0],
        "topY": box[1],
        "bottomX": box[2],
        "bottomY": box[3],
        "isCrowd": int(crowd),
    }
    if polygon is not None:
        obj["polygon"] = polygon
    return obj


@dataclass(frozen=True)
class Skipped:
    """One object left out of the output, where it was and why."""

    location: str
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        detail = f" {self.detail}" if self.detail else ""
        return f"{self.location}: {self.reason}{detail}; skipped"


@dataclass
class Conversion:
    """The result of one converter run: JSONL lines plus what was skipped and why.

    Attributes:
        source_format: e.g. ``"voc"``.
        lines: JSONL objects ``{"image_url", "image_details", "label"}``.
        skipped: objects left out, with their location and reason.
        warnings: problems that did not drop anything (sizes that disagree, unmatched files).
        notes: facts the summary states (task chosen, unused categories).
        clipped: number of objects clipped to the image border.
    """

    source_format: str
    lines: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    clipped: int = 0

    def skip(self, location: str, reason: str, detail: str = "") -> None:
        """Record an object that is left out."""
        self.skipped.append(Skipped(location, reason, detail))

    def class_counts(self) -> Counter[str]:
        """Number of written objects per class."""
        return Counter(obj["label"] for line in self.lines for obj in line["label"])

    def warning_lines(self, limit: int = 50) -> list[str]:
        """``warning: ...`` lines for stderr: every skipped object and warning, capped."""
        lines = [f"warning: {s}" for s in self.skipped] + [f"warning: {w}" for w in self.warnings]
        if len(lines) > limit:
            lines = lines[:limit] + [f"warning: ... and {len(lines) - limit} more"]
        return lines

    def summary(self, output: Path) -> str:
        """The report printed at the end: images, objects per class, skipped objects, output."""
        counts = self.class_counts()
        empty = sum(1 for line in self.lines if not line["label"])
        lines = [
            f"{self.source_format}: {len(self.lines)} images ({empty} without objects), "
            f"{sum(counts.values())} objects, {len(counts)} classes"
        ]
        width = max((len(name) for name in counts), default=0)
        for name, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            lines.append(f"  {name:<{width}}  {count}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} objects:")
            reasons = Counter(s.reason for s in self.skipped)
            lines.extend(f"  {reason}: {n}" for reason, n in reasons.most_common())
        if self.clipped:
            lines.append(f"clipped {self.clipped} objects that reached past the image border")
        if self.warnings:
            lines.append(f"{len(self.warnings)} warnings (see above)")
        lines.extend(f"note: {note}" for note in self.notes)
        lines.append(f"written to {output}")
        return "\n".join(lines)
