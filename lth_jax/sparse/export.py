"""``lth-jax export``: one run of a lottery workdir as a sparse model file.

::

    lth-jax export DIR --round R --trial T [--arm ARM] [--weights trained|rewind] --out FILE

writes the pruned network of arm ``ARM`` (default ``ticket``; ``dense`` in
round 0), trial ``T``, round ``R`` of the lottery (or instability) workdir
``DIR`` in the format of :mod:`lth_jax.sparse.fileformat`, with the model, the
input normalization of the run (the training-set mean and std
:func:`lth_jax.data.get_dataset` computes from the run's ``dataset.*`` and
``seed``), where it comes from and the run's record (``final_test_accuracy``,
``density``, ...). :func:`lth_jax.sparse.load` reads it back.

**What a round's checkpoint keeps** (:mod:`lth_jax.lottery`; every leaf has a
leading axis over the trials the round holds), and so what can be exported:

==================  =============================  ===================================
weights             arm                            from
==================  =============================  ===================================
``trained``         ``dense`` (round 0), ticket    ``ticket``: mask, params, batch stats
``trained``         ``reinit``, ``random_mask``,   ``arms[arm]``: mask, params; no batch
                    ``one_shot``                   stats (refused for a batch-norm model)
``rewind``          ``dense`` (round 0)            ``init`` (all alive)
``rewind``          ticket, ``random_mask``,       ``imp.rewind=weights``: ``rewind``
                    ``one_shot``                   (theta_k) under the arm's mask;
                                                   ``lr``/``finetune``: the ticket trained
                                                   in round R-1 (its checkpoint must be
                                                   kept; ``one_shot``: ``dense``)
``rewind``          ``reinit``                     refused: its fresh initialization is
                                                   not saved
==================  =============================  ===================================

``rewind`` is the network the arm started round R from, masked as the
engine masks it (``masks.apply``). The record (and its accuracy) is always
the run's, that is, the trained network's.

Refused, with :class:`ExportError` (the CLI: one line, exit status 2): a
missing workdir, one that is not a lottery or instability workdir, a round
whose checkpoint the workdir does not hold (``checkpoint.max_to_keep`` keeps
the last few: the message lists the rounds it holds), a trial not in the run
or left out of the round (its dense network diverged), an arm not in the
round, ``rewind`` weights that cannot be rebuilt from what is saved. The
workdir's lock is held while reading, so a run in progress there is refused
too (opening its checkpoints would clean up the run's unfinished ones).
"""

from __future__ import annotations

import os

import numpy as np

from lth_jax import checkpoint as ckpt_lib
from lth_jax import checks, data
from lth_jax import workdir as wd
from lth_jax.sparse import fileformat

__all__ = ["ExportError", "export", "WEIGHTS"]

WEIGHTS = ("trained", "rewind")


class ExportError(checks.ConfigError):
    """A request ``lth-jax export`` refuses (bad input: the CLI exits with status 2)."""


def _take(tree, i: int):
    """The ``i``-th run of a tree with a leading trial axis (nested dicts of arrays)."""
    if isinstance(tree, dict):
        return {k: _take(v, i) for k, v in tree.items()}
    return np.asarray(tree)[i]


def _has_leaves(tree) -> bool:
    return bool(fileformat.flat(tree)) if isinstance(tree, dict) else tree is not None


def _held(records, round_: int, arm: str) -> list[int]:
    """The trials a round's checkpoint holds, in the order of its leading axis."""
    return [
        int(r["trial"])
        for r in records
        if r["round"] == round_ and r["arm"] == arm and r.get("status") != "skipped"
    ]


def _record(records, round_: int, arm: str, trial: int) -> dict:
    here = [r for r in records if r["round"] == round_]
    trials = sorted({int(r["trial"]) for r in records})
    if trial not in trials:
        raise ExportError(f"trial {trial} is not in the run (trials: {_ranges(trials)})")
    arms = list(dict.fromkeys(r["arm"] for r in here))
    if arm not in arms:
        hint = " (round 0 is the dense network: --arm dense)" if round_ == 0 else ""
        raise ExportError(f"arm {arm!r} is not in round {round_} (arms: {', '.join(arms)}){hint}")
    rec = next(r for r in here if r["arm"] == arm and int(r["trial"]) == trial)
    if rec.get("status") == "skipped":
        raise ExportError(
            f"trial {trial} was left out of round {round_}: {rec.get('reason', 'skipped')}"
        )
    return rec


def _ranges(values: list[int]) -> str:
    """``0-3, 7`` for ``[0, 1, 2, 3, 7]``."""
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(v) if v == start else f"{start}-{v}")
            start = None
    return ", ".join(out) or "none"


def _weights(state, records, round_, arm, trial, weights, config, previous):
    """``(params, batch_stats, mask)`` of one run (see the module docstring)."""
    i = _held(records, round_, arm).index(trial)
    main = state["ticket"] if arm in ("dense", "ticket") else state["arms"][arm]
    mask = _take(main["mask"], i)
    has_bn = _has_leaves(state["ticket"].get("batch_stats"))
    if weights == "trained":
        if arm in ("dense", "ticket"):
            return _take(main["params"], i), _take(main.get("batch_stats", {}), i), mask
        if has_bn:
            raise ExportError(
                f"the checkpoint keeps no batch-norm statistics for arm {arm!r} (only the "
                "ticket's): its trained network cannot be exported"
            )
        return _take(main["params"], i), {}, mask
    if arm == "dense":
        src = state["init"]
    elif arm == "reinit" or arm.endswith("_reinit"):  # a fresh init, not saved
        raise ExportError(
            f"--weights rewind: arm {arm!r} started from a fresh initialization (key purpose "
            f"'reinit' of round {round_}) that the checkpoint does not keep; export its "
            "trained weights, or the ticket's rewind weights"
        )
    elif config["imp"]["rewind"] == "weights":
        src = state["rewind"]
    elif arm == "one_shot":
        src = state["dense"]
    else:
        return (*previous(round_ - 1, trial), mask)
    return _take(src["params"], i), _take(src.get("batch_stats", {}), i), mask


def _check_workdir(workdir: str) -> dict:
    if not os.path.isdir(workdir):
        raise ExportError(f"workdir {workdir} does not exist (or is not a folder)")
    config = wd.read_json(os.path.join(workdir, wd.CONFIG))
    if config is None:
        raise ExportError(f"{workdir} holds no {wd.CONFIG}: not an lth-jax workdir")
    kind = config.get("kind", "lottery")
    if kind not in ("lottery", "instability"):
        raise ExportError(
            f"{workdir} is a {kind!r} workdir; export reads lottery and instability workdirs"
        )
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise ExportError(f"{workdir} holds no checkpoints/ (no round has finished there)")
    return config


def _dataset(config):
    d = config["dataset"]
    classes = d.get("classes")
    try:
        return data.get_dataset(
            d["name"],
            data_dir=d.get("data_dir"),
            val_size=d.get("val_size"),
            train_size=d.get("train_size"),
            classes=tuple(classes) if classes is not None else None,
            seed=config.get("seed", 0),
        )
    except (ValueError, data.DatasetUnavailableError) as e:
        prefix = f"the input normalization needs dataset {d['name']}: "
        raise checks.with_detail(e, prefix, ExportError) from e


def export(
    workdir: str,
    round_: int,
    trial: int,
    out: str,
    arm: str | None = None,
    weights: str = "trained",
) -> dict:
    """Writes one run of ``workdir`` to ``out`` (see the module docstring).

    Args:
      workdir: a lottery or instability workdir.
      round_, trial: which run.
      out: the file to write (``.npz``; replaced if it exists).
      arm: the arm (default ``ticket``, or ``dense`` in round 0).
      weights: ``trained`` (the end of round ``round_``) or ``rewind`` (where
        the arm started it).

    Returns:
      The metadata as stored (:func:`lth_jax.sparse.fileformat.save`), with
      ``file_bytes``.

    Raises:
      ExportError: a refused request (see the module docstring); a
        ``ConfigError`` (its base class) when a run holds the workdir's lock.
    """
    if weights not in WEIGHTS:
        raise ExportError(f"--weights must be trained or rewind, got {weights!r}")
    arm = arm or ("dense" if round_ == 0 else "ticket")
    config = _check_workdir(workdir)
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise ExportError(f"--out {out}: folder {folder} does not exist")
    with wd.lock(workdir):
        ck = ckpt_lib.RoundCheckpointer(os.path.join(workdir, "checkpoints"))
        try:
            rounds = ck.rounds()
            if round_ not in rounds:
                keep = config.get("checkpoint", {}).get("max_to_keep")
                why = f"; checkpoint.max_to_keep={keep} keeps the last {keep}" if keep else ""
                raise ExportError(
                    f"the workdir holds no checkpoint of round {round_} (rounds available: "
                    f"{_ranges(rounds)}{why})"
                )
            state, meta = _restore(ck, round_)
            records = meta["records"]
            rec = _record(records, round_, arm, trial)

            def previous(r, t):  # the ticket trained in round r, for lr/finetune rewinding
                if r not in rounds:
                    raise ExportError(
                        f"--weights rewind with imp.rewind={config['imp']['rewind']}: arm {arm} "
                        f"started from the ticket trained in round {r}, whose checkpoint the "
                        f"workdir does not hold (rounds available: {_ranges(rounds)})"
                    )
                s, m = _restore(ck, r)
                i = _held(m["records"], r, "dense" if r == 0 else "ticket").index(t)
                t_ = s["ticket"]
                return _take(t_["params"], i), _take(t_.get("batch_stats", {}), i)

            params, batch_stats, mask = _weights(
                state, records, round_, arm, trial, weights, config, previous
            )
        finally:
            ck.close()
    ds = _dataset(config)
    model = config["model"]
    metadata = {
        "model": {
            "name": model["name"],
            "kwargs": {k: v for k, v in model.get("kwargs", {}).items() if v is not None},
            "num_classes": int(ds.num_classes),
        },
        "input": {
            "dataset": ds.name,
            "classes": config["dataset"].get("classes"),
            "shape": list(ds.test_x.shape[1:]),
            "mean": np.asarray(ds.mean, np.float32).tolist(),
            "std": np.asarray(ds.std, np.float32).tolist(),
            "normalize": "(x - mean) / std in float32; mean and std of the run's training set",
        },
        "source": {
            "workdir": os.path.abspath(workdir),
            "round": round_,
            "trial": trial,
            "arm": arm,
            "weights": weights,
            "imp_rewind": config["imp"].get("rewind", "weights"),
            "rewind_step": config["imp"].get("rewind_step", 0),
        },
        "record": {
            k: rec.get(k)
            for k in (
                "status",
                "density",
                "final_test_accuracy",
                "final_test_loss",
                "test_accuracy_at_best_val",
                "best_val_step",
            )
        },
    }
    return fileformat.save(out, params, mask, batch_stats, metadata)


def _restore(ck, round_: int):
    try:
        return ck.restore(round_)
    except Exception as e:  # noqa: BLE001 - any failure to read is reported in one line
        raise ExportError(
            f"the checkpoint of round {round_} cannot be read ({checks.first_line(e, 200)})"
        ) from None


def summary(info: dict) -> str:
    """The line ``lth-jax export`` prints: file size against the dense float32 weights."""
    s, src, rec = info["sizes"], info["source"], info["record"]
    dense, size = s["dense_float32_bytes"], info["file_bytes"]
    acc = rec.get("final_test_accuracy")
    acc_text = "" if acc is None else f"; recorded final test accuracy {acc:.4f}"
    return (
        f"{size:,} bytes, against {dense:,} bytes for the dense float32 weights "
        f"({size / dense:.2f}x); {s['alive']:,} of {s['prunable']:,} prunable weights kept "
        f"({s['alive'] / max(s['prunable'], 1):.1%}); round {src['round']}, trial "
        f"{src['trial']}, arm {src['arm']}, {src['weights']} weights{acc_text}"
    )
