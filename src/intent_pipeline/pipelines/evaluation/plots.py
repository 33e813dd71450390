"""Evaluation plots: confusion matrix, confidence histogram, reliability diagram.

Figures are built with the object-oriented API on the Agg canvas (no pyplot): no global backend state, no
display needed, safe in a Kedro run on a headless server.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _new_figure(width: float, height: float) -> Figure:
    """A figure bound to the Agg canvas."""
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def confusion_matrix_figure(matrix: np.ndarray, labels: Sequence[str], title: str) -> Figure:
    """Counts per (gold, predicted) cell, coloured by the share of the gold row (recall on the diagonal)."""
    matrix = np.asarray(matrix)
    size = max(4.0, 0.9 * len(labels) + 2.0)
    figure = _new_figure(size + 1.0, size)
    axes = figure.add_subplot()
    row_totals = matrix.sum(axis=1, keepdims=True)
    # Colour by row share so a small class's misses are as visible as a large one's.
    shares = np.divide(matrix, row_totals, out=np.zeros(matrix.shape, dtype=float), where=row_totals > 0)
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="share of the gold class")
    axes.set_xticks(range(len(labels)), labels=labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels=labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    axes.set_title(title, fontsize=10)
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            axes.text(column, row, str(int(matrix[row, column])), ha="center", va="center",
                      color="white" if shares[row, column] > 0.5 else "black", fontsize=9)
    return figure


def confidence_histogram_figure(confidences: np.ndarray, correct: np.ndarray, title: str,
                                bins: int = 20) -> Figure:
    """Confidence of correct vs wrong predictions: where they overlap, a threshold cannot separate them."""
    confidences = np.asarray(confidences, dtype=float)
    correct = np.asarray(correct, dtype=bool)
    figure = _new_figure(7.0, 4.5)
    axes = figure.add_subplot()
    edges = np.linspace(0.0, 1.0, bins + 1)
    axes.hist(confidences[correct], bins=edges, alpha=0.6, color="tab:green",
              label=f"correct ({correct.sum()})")
    axes.hist(confidences[~correct], bins=edges, alpha=0.6, color="tab:red",
              label=f"wrong ({(~correct).sum()})")
    axes.set_xlim(0.0, 1.0)
    axes.set_xlabel("confidence of the predicted intent")
    axes.set_ylabel("test examples")
    axes.set_title(title, fontsize=10)
    axes.legend()
    return figure


def reliability_diagram_figure(calibration_bins: Sequence[dict], ece: float, title: str) -> Figure:
    """Accuracy per confidence bin against the diagonal of perfect calibration, with the ECE."""
    figure = _new_figure(5.5, 5.5)
    axes = figure.add_subplot()
    lowers = np.array([b["lower"] for b in calibration_bins])
    widths = np.array([b["upper"] - b["lower"] for b in calibration_bins])
    accuracies = np.array([b["accuracy"] if b["count"] else 0.0 for b in calibration_bins])
    mean_confidences = np.array([b["mean_confidence"] if b["count"] else 0.0 for b in calibration_bins])
    counts = [b["count"] for b in calibration_bins]
    axes.bar(lowers, accuracies, width=widths, align="edge", edgecolor="black", color="tab:blue",
             alpha=0.7, label="accuracy")
    axes.bar(lowers, mean_confidences - accuracies, bottom=accuracies, width=widths, align="edge",
             edgecolor="tab:red", color="tab:red", alpha=0.25, hatch="//", label="gap to confidence")
    for lower, width, accuracy, count in zip(lowers, widths, accuracies, counts, strict=True):
        if count:
            axes.text(lower + width / 2, min(accuracy + 0.02, 0.97), str(count), ha="center", fontsize=7)
    axes.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.0)
    axes.set_xlabel("confidence")
    axes.set_ylabel("accuracy")
    axes.set_title(f"{title}\nECE = {ece:.3f} (bar labels: examples per bin)", fontsize=10)
    axes.legend(loc="upper left")
    return figure
