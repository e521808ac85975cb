"""Evaluation curves of trained runs and the record fields taken from them.

**Early stopping.** The early-stopping iteration is the evaluation step with
the lowest validation loss (``metric="val_loss"``, the default, as Frankle &
Carbin report) or the highest validation accuracy (``metric="val_accuracy"``),
the first one on ties; NaN never wins. The test accuracy there is reported
beside the final one (config key ``train.early_stop_metric``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Curves", "early_stop", "curve_fields", "EARLY_STOP_METRICS"]

#: What early stopping may select on: the lowest validation loss or the highest accuracy.
EARLY_STOP_METRICS = ("val_loss", "val_accuracy")


class Curves(NamedTuple):
    """Evaluation curves, arrays of shape ``(runs, evals)``; ``steps`` is ``(evals,)``."""

    steps: np.ndarray
    train_loss: np.ndarray
    val_loss: np.ndarray
    val_accuracy: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray


def early_stop(curve, steps, metric: str = "val_loss"):
    """``(index, step)`` of the best point of a 1-D validation curve (first on ties).

    ``metric="val_loss"``: ``curve`` is a loss, the minimum wins;
    ``"val_accuracy"``: an accuracy, the maximum wins. A non-finite point never
    wins over a finite one; on a curve with no finite point (a run that
    diverged before its first evaluation) it is the first point.

    Example:
      >>> early_stop([3.0, 1.0, 1.0, 2.0], [10, 20, 30, 40])
      (1, 20)
      >>> early_stop([0.5, 0.7, 0.7, 0.6], [10, 20, 30, 40], "val_accuracy")
      (1, 20)
      >>> early_stop([float("nan"), float("nan")], [10, 20])
      (0, 10)
    """
    if metric not in EARLY_STOP_METRICS:
        raise ValueError(f"metric must be one of {', '.join(EARLY_STOP_METRICS)}, got {metric!r}")
    v = np.asarray(curve, dtype=np.float64)
    v = v if metric == "val_loss" else -v
    v = np.where(np.isfinite(v), v, np.inf)
    i = int(np.argmin(v))
    return i, int(np.asarray(steps)[i])


def curve_fields(curves, j: int, metric: str = "val_loss") -> dict:
    """The record fields of run ``j`` of ``curves`` (a :class:`Curves`): final and early-stop.

    Final test/validation loss and accuracy, the early-stopping step
    (:func:`early_stop` on ``metric``) with the validation loss and test
    accuracy there, the eval steps and the training-loss, validation-loss,
    validation-accuracy and test-accuracy curves, as plain Python numbers (what
    ``metrics.jsonl`` holds for every run).
    """
    curve = curves.val_loss[j] if metric == "val_loss" else curves.val_accuracy[j]
    bi, bstep = early_stop(curve, curves.steps, metric)
    floats = lambda a: [float(v) for v in a]
    return {
        "final_test_accuracy": float(curves.test_accuracy[j, -1]),
        "final_test_loss": float(curves.test_loss[j, -1]),
        "final_val_loss": float(curves.val_loss[j, -1]),
        "final_val_accuracy": float(curves.val_accuracy[j, -1]),
        "best_val_step": bstep,
        "best_val_loss": float(curves.val_loss[j, bi]),
        "test_accuracy_at_best_val": float(curves.test_accuracy[j, bi]),
        "eval_steps": [int(s) for s in curves.steps],
        "train_loss_curve": floats(curves.train_loss[j]),
        "val_loss_curve": floats(curves.val_loss[j]),
        "val_accuracy_curve": floats(curves.val_accuracy[j]),
        "test_accuracy_curve": floats(curves.test_accuracy[j]),
    }
