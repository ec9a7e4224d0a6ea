"""PNG charts of evaluation results: confusion matrix, per-class bars, training curves.

Matplotlib runs on the Agg backend (no display). Each function writes one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: servers, CI and trial subprocesses have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

_DPI = 110


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _short(name: str, limit: int = 18) -> str:
    """Shorten long class names in the middle: similar names usually differ at the end."""
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2
    return name[:head] + "…" + name[len(name) - (limit - 1 - head) :]


def plot_confusion_matrix(cm: list[list[int]], class_names: list[str], path: Path) -> Path:
    """Draw a confusion matrix: cell text = counts, colour = share of the true class (row).

    Args:
        cm: C×C counts, rows = true class, columns = predicted class.
        class_names: C names.
        path: the PNG to write.
    """
    counts = np.asarray(cm, dtype=np.int64).reshape(len(class_names), len(class_names))
    row_sums = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, row_sums, out=np.zeros(counts.shape), where=row_sums > 0)
    size = len(class_names)
    side = min(max(4.0, 0.6 * size + 2.5), 16.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    labels = [_short(n) for n in class_names]
    ax.set_xticks(range(size), labels, rotation=45, ha="right")
    ax.set_yticks(range(size), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix ({int(counts.sum())} images)")
    if size <= 30:  # beyond that the numbers would overlap; colours still read
        for i in range(size):
            for j in range(size):
                colour = "white" if share[i, j] > 0.5 else "black"
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    color=colour,
                    fontsize=9 if size <= 15 else 7,
                )
    return _save(fig, path)


def plot_per_class_metrics(per_class: dict[str, dict[str, float]], path: Path) -> Path:
    """Grouped bars of precision, recall and F1 per class (undefined values, -1, are not drawn).

    Args:
        per_class: class name → metric dict as in ``ClassificationResult.per_class``.
        path: the PNG to write.
    """
    names = list(per_class)
    keys = (("precision", "precision"), ("recall", "recall"), ("f1_score", "F1"))
    x = np.arange(len(names))
    width = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(min(max(6.0, 0.9 * len(names) + 2), 30.0), 4.5))
    for k, (key, label) in enumerate(keys):
        values = np.array([per_class[n].get(key, -1.0) for n in names], dtype=float)
        ax.bar(x + (k - 1) * width, np.where(values < 0, np.nan, values), width, label=label)
    for i, name in enumerate(names):  # say why a class has no bars instead of leaving a gap
        if all(per_class[name].get(key, -1.0) < 0 for key, _ in keys):
            ax.text(i, 0.02, "n/a", ha="center", va="bottom", color="grey")
    labels = [f"{_short(n)}\n(n={int(per_class[n].get('support', 0))})" for n in names]
    rotate = len(names) > 6
    ax.set_xticks(x, labels, rotation=45 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylim(0, 1.15)  # headroom for the legend above the bars
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("score")
    ax.set_title("Per-class precision, recall and F1")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", ncols=3, frameon=False)
    return _save(fig, path)


def plot_training_curves(
    history: list[dict[str, float]], path: Path, *, primary_metric: str
) -> Path:
    """Two panels: train/val loss and the primary metric against the epoch.

    Args:
        history: one dict per epoch, ``{"epoch", "train_loss", "val_loss"?, primary_metric?, ...}``;
            epochs without validation may lack ``val_loss`` and the metric.
        path: the PNG to write.
        primary_metric: the metric key to draw in the second panel (e.g. ``"accuracy"``).
    """
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))

    def series(key: str) -> tuple[list[float], list[float]]:
        rows = [h for h in history if h.get(key) is not None]
        return [h["epoch"] for h in rows], [h[key] for h in rows]

    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        epochs, values = series(key)
        if values:
            ax_loss.plot(epochs, values, marker="o", label=label)
    ax_loss.set_title("Loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.grid(alpha=0.3)
    if ax_loss.lines:
        ax_loss.legend()
    epochs, values = series(primary_metric)
    if values:
        ax_metric.plot(epochs, values, marker="o", color="tab:green")
        best = int(np.argmax(values))
        ax_metric.scatter(
            [epochs[best]],
            [values[best]],
            s=120,
            facecolors="none",
            edgecolors="tab:red",
            label=f"best {values[best]:.4f}",
            zorder=3,
        )
        ax_metric.legend()
    ax_metric.set_title(f"Validation {primary_metric}")
    ax_metric.set_xlabel("epoch")
    ax_metric.grid(alpha=0.3)
    for ax in (ax_loss, ax_metric):
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return _save(fig, path)
