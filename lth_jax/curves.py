"""Evaluation curves of trained runs and the record fields taken from them.

**Early stopping.** The early-stopping iteration is the evaluation step with
the lowest validation loss (the first one on ties; NaN never wins), as Frankle
& Carbin report; the test accuracy there is reported beside the final one.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Curves", "early_stop", "curve_fields"]


class Curves(NamedTuple):
    """Evaluation curves, arrays of shape ``(runs, evals)``; ``steps`` is ``(evals,)``."""

    steps: np.ndarray
    train_loss: np.ndarray
    val_loss: np.ndarray
    val_accuracy: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray


def early_stop(val_loss, steps):
    """``(index, step)`` of the minimum validation loss (first on ties).

    NaN losses never win. Works on a 1-D curve.

    Example:
      >>> early_stop([3.0, 1.0, 1.0, 2.0], [10, 20, 30, 40])
      (1, 20)
    """
    v = np.asarray(val_loss, dtype=np.float64)
    v = np.where(np.isfinite(v), v, np.inf)
    i = int(np.argmin(v))
    return i, int(np.asarray(steps)[i])


def curve_fields(curves, j: int) -> dict:
    """The record fields of run ``j`` of ``curves`` (a :class:`Curves`): final and early-stop.

    Final test/validation loss and accuracy, the early-stopping step
    (:func:`early_stop`) with the validation loss and test accuracy there, the
    eval steps and the training-loss, validation-loss and test-accuracy curves,
    as plain Python numbers (what ``metrics.jsonl`` holds for every run).
    """
    bi, bstep = early_stop(curves.val_loss[j], curves.steps)
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
        "test_accuracy_curve": floats(curves.test_accuracy[j]),
    }
