"""Training-run figures as matplotlib Figures (Agg backend; nothing is shown).

ROC, precision-recall, calibration and lift curves compare the model with every
baseline on the same test snapshots; feature importance and SHAP summaries
describe the model. SHAP values come from :mod:`pes_ml.explain`; this module
only draws them.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures are written to files, never shown

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from pes_ml.evaluate import calibration_table, lift_table  # noqa: E402

logger = logging.getLogger(__name__)


def _scorers(predictions: pd.DataFrame) -> list[str]:
    return [c for c in predictions.columns if c != "y"]


def roc_figure(predictions: pd.DataFrame, title: str) -> Figure:
    """ROC curves of the model and baselines; ``predictions`` has y plus one column per scorer."""
    fig, ax = plt.subplots(figsize=(6, 5))
    y = predictions["y"].to_numpy()
    for name in _scorers(predictions):
        fpr, tpr, _ = roc_curve(y, predictions[name])
        ax.plot(fpr, tpr, lw=2.2 if name == "model" else 1.0, label=name)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def pr_figure(predictions: pd.DataFrame, title: str) -> Figure:
    """Precision-recall curves with the base rate as a reference line."""
    fig, ax = plt.subplots(figsize=(6, 5))
    y = predictions["y"].to_numpy()
    for name in _scorers(predictions):
        precision, recall, _ = precision_recall_curve(y, predictions[name])
        ax.plot(recall, precision, lw=2.2 if name == "model" else 1.0, label=name)
    ax.axhline(y.mean(), ls="--", c="grey", lw=0.8)
    ax.set(xlabel="recall", ylabel="precision", title=title)
    ax.legend(fontsize=7)
    return fig


def calibration_figure(predictions: pd.DataFrame, title: str) -> Figure:
    """Observed rate against mean predicted probability in equal-frequency bins."""
    fig, ax = plt.subplots(figsize=(6, 5))
    y = predictions["y"].to_numpy()
    top = 0.0
    for name in _scorers(predictions):
        table = calibration_table(y, predictions[name])
        top = max(top, table["mean_predicted"].max(), table["observed_rate"].max())
        ax.plot(
            table["mean_predicted"],
            table["observed_rate"],
            marker="o",
            ms=3,
            lw=2.2 if name == "model" else 1.0,
            label=name,
        )
    ax.plot([0, top], [0, top], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title=title)
    ax.legend(fontsize=7)
    return fig


def lift_figure(predictions: pd.DataFrame, title: str) -> Figure:
    """Cumulative capture of positives by score decile."""
    fig, ax = plt.subplots(figsize=(6, 5))
    y = predictions["y"].to_numpy()
    for name in _scorers(predictions):
        table = lift_table(y, predictions[name])
        ax.plot(
            table["decile"],
            table["cumulative_capture"],
            marker="o",
            ms=3,
            lw=2.2 if name == "model" else 1.0,
            label=name,
        )
    ax.plot([0, 10], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="decile (highest scores first)", ylabel="share of positives captured", title=title)
    ax.legend(fontsize=7)
    return fig


def importance_figure(importance: pd.DataFrame, title: str, top: int = 20) -> Figure:
    """Total split gain of the top features."""
    rows = importance.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, max(3, 0.3 * len(rows))))
    ax.barh(rows["feature"], rows["gain"])
    ax.set(xlabel="total gain", title=title)
    fig.tight_layout()
    return fig


def shap_figures(values: np.ndarray, matrix: pd.DataFrame, title: str, top: int = 20) -> dict[str, Figure]:
    """Beeswarm and mean-|SHAP| bar figures from precomputed SHAP values (log-odds)."""
    figures: dict[str, Any] = {}
    for kind, plot_type in (("beeswarm", "dot"), ("bar", "bar")):
        plt.figure()
        with warnings.catch_warnings():
            # shap 0.51 calls matplotlib's Colormap.set_bad (pending deprecation) on import and
            # when plotting: its noise, not ours
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            import shap

            # An explicit generator: shap otherwise shuffles with the global NumPy RNG (and warns
            # when anything seeded it); the plot is then the same on every run.
            shap.summary_plot(
                values, matrix, plot_type=plot_type, max_display=top, show=False,
                rng=np.random.default_rng(0),
            )
        fig = plt.gcf()
        fig.suptitle(title, fontsize=9)
        figures[kind] = fig
    return figures


def close(fig: Figure) -> None:
    plt.close(fig)
