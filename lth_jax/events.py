"""Live metrics of a run: TensorBoard event files, Weights & Biases, a plain line per chunk.

The engine trains a round as compiled chunks of ``train.eval_every`` steps,
each ending with an evaluation (:mod:`lth_jax.loop`); the hook of one round
(:meth:`Live.round`) sees every chunk's outputs as soon as it ends, and writes:

* **TensorBoard** (``log.tensorboard``, on by default): under
  ``<workdir>/tensorboard/``, one TensorBoard run per round, arm and trial,
  ``round_<rr>/<arm>/trial_<t>/`` (``rr`` two digits, so runs sort by round;
  round 0's arm is ``dense``; the ``instability`` kind's two copies of a
  round are ``copy_a`` and ``copy_b``). After each chunk ending at global step ``s``,
  at step ``s``: ``train_loss`` (the mean training loss of the chunk's steps),
  ``val_loss``, ``val_accuracy``, ``test_loss``, ``test_accuracy`` (the
  evaluation after the chunk: the same numbers as the curves of
  ``metrics.jsonl``), ``learning_rate`` (the rate of the chunk's last step,
  ``s - 1``, read from the optimizer state) and ``density`` (the fraction of
  prunable weights alive after the chunk: constant within a round except for
  the ``gmp`` arm). Events reach the file within 2 s (tensorboardX's writer
  thread); a round's writers are closed, so flushed, at its last chunk.
* **Transfer's fine-tuning** (the ``transfer`` kind, :meth:`Live.finetune`):
  the same names under the transfer workdir's ``tensorboard/``, one
  TensorBoard run per target size, arm and trial,
  ``finetune/size_<ii>/<arm>/trial_<t>/`` (``ii`` two digits: the index into
  ``target.train_sizes``; every arm trained on the target, the ticket arms
  ``ticket_source``, ``ticket_source_reinit`` and ``random_mask`` included),
  at the fine-tuning step (``finetune.eval_every``, ..., ``finetune.steps``).
  Its ``source/`` and ``target_imp/size<i>_trial<t>/`` runs (``ticket_target``)
  are lottery runs with their own ``tensorboard/`` folders, as above.
* **Weights & Biases** (``log.wandb``, off by default; the ``wandb`` package
  is imported only then): the same values, one W&B run per workdir (its id
  kept in ``tensorboard/wandb-run-id``, so a resumed run continues it), keys
  ``<run folder>/<name>`` (``round_<rr>/<arm>/trial_<t>/<name>``) against the
  metric ``step``.
* **A plain line** on stderr per chunk when progress bars are off
  (``progress=False``; ``log.lines=False`` turns the lines off too):
  ``lth-jax: round 1, step 200/1000, 3 arms x 4 trials: train loss 0.4123, 12.3 s``
  (the mean over runs of finite chunk losses; the seconds since the round, or
  its resumption, began in this process);
  fine-tuning's starts ``lth-jax: finetune size 10% trial 0, step 200/1000``
  (the arms trained together: those of one dropout, L2-SP and freezing group).

Why tensorboardX: it writes TensorBoard's event files itself (protobuf
records) and needs no TensorFlow; ``clu.metric_writers``' summary writer is
``tf.summary``, which imports TensorFlow (gigabytes, seconds per import), and
``torch.utils.tensorboard`` needs PyTorch. TensorBoard, to view the files,
is a separate install (``pip install tensorboard``).

Rules stated exactly:

* **Nothing feeds back.** The hook reads host copies of a chunk's outputs and
  of the runs' learning rates and mask counts; training, checkpoints and
  ``metrics.jsonl`` are the same with every switch on or off.
* **Resume appends.** Each process start writes new event files (their names
  end in ``.<pid>.<ns>``; TensorBoard merges the files of a run folder). The
  first event a process writes in a run folder carries TensorBoard's purge
  step: the step of its first point, so points that an interrupted process
  wrote after its last checkpoint (and that the resumed process writes again)
  are hidden, and every curve has one point per evaluation step. Transfer
  redoes an unfinished target size from its first step, so its new files hide
  every point the interrupted process wrote for that size.
* **One writer.** Only process 0 of a multi-host run writes or prints; every
  process gathers the values (a collective).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lth_jax import masks as masks_lib
from lth_jax import parallel
from lth_jax import workdir as wd
from lth_jax.checks import ConfigError

__all__ = ["FOLDER", "NAMES", "Live", "check"]

#: The workdir folder of the event files.
FOLDER = "tensorboard"
#: The scalar names written per run, in order.
NAMES = (
    "train_loss",
    "val_loss",
    "val_accuracy",
    "test_loss",
    "test_accuracy",
    "learning_rate",
    "density",
)
WANDB_ID = "wandb-run-id"
FLUSH_SECS = 2


def check(config) -> None:
    """Refuses ``log.wandb=True`` without the ``wandb`` package, in one line.

    Raises:
      ConfigError: wandb is asked for but cannot be imported.
    """
    log = config.get("log")
    if log is not None and log.get("wandb") and importlib.util.find_spec("wandb") is None:
        raise ConfigError(
            "log.wandb=True needs the wandb package, which is not installed: "
            "pip install wandb, or set log.wandb=False"
        )


class Live:
    """The live metrics of one run in ``workdir`` (see the module docstring).

    Args:
      workdir: the run's workdir (events go to ``<workdir>/tensorboard/``).
      config: the run's config (``log.tensorboard``, ``log.wandb``, ``log.lines``,
        ``train.steps``).
      progress: progress bars are on (no plain lines then).
      is_main: this process writes (process 0).
      steps: the last step of every training the hooks see (default
        ``config.train.steps``; transfer's fine-tuning: ``finetune.steps``).
    """

    def __init__(
        self,
        workdir: str,
        config,
        progress: bool,
        is_main: bool = True,
        steps: int | None = None,
    ):
        log = config.get("log") or {}
        self.root = os.path.join(workdir, FOLDER)
        self.tensorboard = bool(log.get("tensorboard", False))
        self.wandb = bool(log.get("wandb", False))
        self.lines = not progress and bool(log.get("lines", True))
        self.steps = int(config.train.steps if steps is None else steps)
        self.is_main = is_main
        self.enabled = self.tensorboard or self.wandb or self.lines
        self._writers: dict[str, Any] = {}
        self._run = self._start_wandb(workdir, config) if self.wandb and is_main else None

    def _start_wandb(self, workdir: str, config):
        check(config)
        import wandb

        os.makedirs(self.root, exist_ok=True)
        id_path = os.path.join(self.root, WANDB_ID)
        if os.path.exists(id_path):
            with open(id_path, encoding="utf-8") as f:
                run_id = f.read().strip()
        else:
            run_id = secrets.token_hex(8)
            with open(id_path, "w", encoding="utf-8") as f:
                f.write(run_id + "\n")
        try:
            run = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "lth_jax"),
                name=os.path.basename(os.path.abspath(workdir)),
                id=run_id,
                resume="allow",
                config=wd.config_to_json(config),
            )
        except Exception as e:  # noqa: BLE001 - any failure of the service: one line
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise wd.RunFailed(f"log.wandb: wandb.init failed: {msg}") from None
        run.define_metric("step")
        run.define_metric("*", step_metric="step")
        return run

    def round(
        self,
        round_: int,
        on_chunk: Callable[..., Any] | None,
        arms: Sequence[str],
        trials: Callable[[], Sequence[int]],
        label: str | None = None,
    ):
        """The ``on_chunk`` hook of round ``round_``: ``on_chunk``'s, plus the live metrics.

        Runs are arm-major: run ``j`` is arm ``arms[j // T]``, trial
        ``trials()[j % T]`` for ``T = len(trials())`` (read at the first chunk:
        trials left out of a round are gone by then). ``label`` starts the
        plain line (default ``round <r>``). Returns ``on_chunk`` itself when
        nothing is to be written.
        """
        if not self.enabled:
            return on_chunk
        label = f"round {round_}" if label is None else label
        return _Hook(self, f"round_{round_:02d}/", on_chunk, list(arms), trials, label)

    def finetune(
        self,
        size_index: int,
        trial: int,
        arms: Sequence[str],
        label: str,
        on_chunk: Callable[..., Any] | None = None,
    ):
        """The ``on_chunk`` hook of one transfer fine-tuning call: ``arms`` of one trial.

        Run ``j`` of the call is arm ``arms[j]``, trial ``trial``; its run folder is
        ``finetune/size_<size_index:02d>/<arm>/trial_<trial>/``. ``label`` starts
        the plain line (``finetune size 10% trial 0``). Returns ``on_chunk``
        itself when nothing is to be written.
        """
        if not self.enabled:
            return on_chunk
        prefix = f"finetune/size_{size_index:02d}/"
        return _Hook(self, prefix, on_chunk, list(arms), lambda: [trial], label)

    def _writer(self, name: str, step: int):
        w = self._writers.get(name)
        if w is None:
            w = _summary_writer()(
                logdir=os.path.join(self.root, name),
                purge_step=step,
                flush_secs=FLUSH_SECS,
                filename_suffix=f".{os.getpid()}.{time.time_ns()}",
            )
            self._writers[name] = w
        return w

    def write(self, step: int, values: dict[str, dict[str, float]]) -> None:
        """Writes ``{run folder: {name: value}}`` at ``step`` (process 0 only)."""
        if not self.is_main:
            return
        if self.tensorboard:
            for name, scalars in values.items():
                w = self._writer(name, step)
                for tag, v in scalars.items():
                    w.add_scalar(tag, v, step)
        if self._run is not None:
            flat = {f"{name}/{k}": v for name, s in values.items() for k, v in s.items()}
            self._run.log({"step": step, **flat})

    def close_round(self, prefix: str) -> None:
        """Closes (so flushes) the writers of the run folders under ``prefix``."""
        self.close_folders([n for n in self._writers if n.startswith(prefix)])

    def close_folders(self, names) -> None:
        """Closes (so flushes) the writers of the run folders ``names`` that are open."""
        for name in names:
            w = self._writers.pop(name, None)
            if w is not None:
                w.close()

    def close(self) -> None:
        """Closes every writer and the W&B run (at the end of the process's run)."""
        self.close_round("")
        if self._run is not None:
            self._run.finish()
            self._run = None


class _Hook:
    """``on_chunk(step, get_state)`` of one training call, with ``on_eval`` (:meth:`Engine.fit`).

    Its runs' folders are ``<prefix><arm>/trial_<t>`` (arm-major, see :meth:`Live.round`).
    """

    def __init__(self, live: Live, prefix: str, on_chunk, arms, trials, label: str):
        self.live, self.prefix, self.on_chunk, self.label = live, prefix, on_chunk, label
        self.arms, self.trials = arms, trials
        self.folders: set[str] = set()
        self.t0 = time.perf_counter()

    def __call__(self, step: int, get_state) -> None:
        if self.on_chunk is not None:
            self.on_chunk(step, get_state)

    def on_eval(self, step: int, out, groups, n: int) -> None:
        """Writes chunk ``out`` (per padded run: train loss, val loss and accuracy, test loss
        and accuracy) of the ``n`` real runs at ``step``; ``groups``: the list of run groups
        (:mod:`lth_jax.loop`). Reads only."""
        live = self.live
        opts = [g.opt_state for g in groups]
        hyper = lambda o: getattr(getattr(o, "inner_state", None), "hyperparams", None) or {}
        lrs = [hyper(o).get("learning_rate") for o in opts]
        lr = None if lrs[0] is None else parallel.join_runs(lrs)
        mask = parallel.join_runs([o.mask for o in opts]) if hasattr(opts[0], "mask") else None
        out, lr, mask = parallel.to_host((tuple(out), lr, mask))
        density = None if mask is None else masks_lib.run_densities(mask)[0]
        trials = [int(t) for t in self.trials()]
        labels = [(a, t) for a in self.arms for t in trials][:n]
        values = {}
        for j, (arm, trial) in enumerate(labels):
            v = {name: float(np.asarray(o)[j]) for name, o in zip(NAMES, out)}
            if lr is not None:
                v["learning_rate"] = float(np.asarray(lr)[j])
            if density is not None and density[j] is not None:  # the records' density
                v["density"] = density[j]
            values[f"{self.prefix}{arm}/trial_{trial}"] = v
        self.folders.update(values)
        if live.tensorboard or live._run is not None:
            live.write(step, values)
        if live.lines and live.is_main:
            losses = np.asarray(out[0])[: len(labels)]
            finite = losses[np.isfinite(losses)]
            loss = f"{float(np.mean(finite)):.4f}" if finite.size else "nan"
            runs_of = f"{_count(len(self.arms), 'arm')} x {_count(len(trials), 'trial')}"
            print(
                f"lth-jax: {self.label}, step {step}/{live.steps}, {runs_of}: "
                f"train loss {loss}, {time.perf_counter() - self.t0:.1f} s",
                file=sys.stderr,
                flush=True,
            )
        if step >= live.steps:
            live.close_folders(sorted(self.folders))


def _count(k: int, what: str) -> str:
    return f"{k} {what}" + ("" if k == 1 else "s")


def _summary_writer():
    """tensorboardX's ``SummaryWriter``, imported without PyTorch.

    tensorboardX imports PyTorch when it is installed (only to accept its
    tensors; the values written here are floats), which costs about a second
    per process; it is hidden from that import unless it is already loaded.
    """
    if "tensorboardX" not in sys.modules and "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` fails at once
        try:
            from tensorboardX import SummaryWriter
        finally:
            del sys.modules["torch"]
        return SummaryWriter
    from tensorboardX import SummaryWriter

    return SummaryWriter
