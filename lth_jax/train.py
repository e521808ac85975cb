"""Compiled training: many runs of one network as one jitted program.

A *run* is one network being trained: its params (kept masked), batch-norm
statistics, optimizer state (which holds the mask, see
:func:`lth_jax.masks.keep_pruned`), data-order and dropout keys. An
:class:`Engine` trains a batch of runs (trials x arms) together: the batch axis
is vmapped and sharded over the devices of a mesh; every run of the batch is
at the same global step, so the learning-rate schedule and the epoch
boundaries are shared scalars.

One call of the compiled *chunk* function does ``train.eval_every`` steps as a
``lax.scan`` (data resident on the device, batches gathered from an epoch
permutation drawn from the run's data key) and then evaluates every run on the
validation and test sets. Python only loops over chunks (to update the
progress bar), so a round of ``T`` steps is ``T / eval_every`` calls of one
compiled program, and a new mask or a new round never recompiles.

**The one call.** Runners use :meth:`Engine.fit` (train a batch of runs from
given params, batch stats, masks and keys, from a start step, and get back the
trained state, the curves and the failures), :meth:`Engine.init`,
:meth:`Engine.evaluate`, :meth:`Engine.param_shapes` and
:meth:`Engine.for_dataset` (the same programs on another subset). ``fit`` pads the run
batch to the devices, resumes from and writes mid-round checkpoints through
its hooks, and returns host copies of the real runs only.

Rules stated exactly:

* **Data order.** Step ``s`` uses batch ``s mod E`` of
  :func:`lth_jax.data.epoch_permutation` ``(data_key, s // E, n_train)`` where
  ``E = n_train // batch_size`` (the remainder of an epoch is dropped). Two
  runs with the same data key see the same batches. A run carries its
  epoch's permutation (``RunState.perm``) from one chunk to the next, so it
  is drawn once per epoch; a new run holds ``-1`` and draws it at its first
  step.
* **Dropout.** Step ``s`` uses ``fold_in(dropout_key, s)``.
* **Learning rate.** Step ``s`` uses ``schedule(s)``, or one constant rate
  for the whole fit when one is given (fine-tuning: ``imp.finetune_lr``, or
  the schedule's rate at a fixed step); the rate is data of the compiled
  chunk and reaches the optimizer through ``optax.inject_hyperparams``, so
  the schedule can be replayed from any step (learning-rate rewinding) and a
  new constant rate never recompiles.
* **Early stopping.** See :mod:`lth_jax.curves`.
* **Non-finite loss.** A run whose training loss becomes NaN or Inf stops
  updating from that step on; its ``fail_step`` records the step. Other runs
  are unaffected.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec

from lth_jax import checkpoint as ckpt_lib
from lth_jax import fused_adam, loop, parallel
from lth_jax import gmp as gmp_lib
from lth_jax import masks as masks_lib
from lth_jax.curves import Curves
from lth_jax.data import pipeline
from lth_jax.loop import cross_entropy  # the training loss, defined beside the step
from lth_jax.optim import FixedLR, make_optimizer, make_schedule
from lth_jax.parallel import pad_runs, to_host

__all__ = ["RunState", "FitResult", "Engine", "cross_entropy"]


class RunState(NamedTuple):
    """The carried state of a batch of runs (every leaf has a leading run axis)."""

    params: Any
    batch_stats: Any
    opt_state: Any
    perm: jax.Array  # the order of the epoch of the last step done; -1: none drawn yet
    data_key: jax.Array
    dropout_key: jax.Array
    fail_step: jax.Array
    gmp: Any = None  # a lth_jax.gmp.Schedule (mask updates), or None: none


class FitResult(NamedTuple):
    """What :meth:`Engine.fit` returns, for the real runs only (host copies as jax arrays).

    Attributes:
      params, batch_stats: the trained state, leading run axis.
      fail_step: numpy ``(runs,)``, the step of a non-finite loss or -1.
      curves: the evaluation :class:`~lth_jax.curves.Curves`.
      snapshot: ``(params, batch_stats)`` at ``snapshot_step``, or ``None``.
      mask: the final masks (the given ones, but a ``gmp`` run's pruned one).
    """

    params: Any
    batch_stats: Any
    fail_step: np.ndarray
    curves: Curves
    snapshot: Any
    mask: Any = None


@dataclasses.dataclass(eq=False)
class Engine:
    """Trains batches of runs of ``model`` on one dataset as compiled chunks.

    Args:
      model: a flax linen module with ``__call__(x, train)``.
      dataset: an object with ``train_x, train_y, val_x, val_y, test_x, test_y``
        numpy arrays (see :func:`lth_jax.data.get_dataset`).
      optimizer: the ``optimizer`` config block.
      steps: total training steps ``T`` of a full run (the schedule's length).
      batch_size: training batch size.
      eval_every: steps per compiled chunk; evaluation after each chunk.
      eval_batch_size: evaluation batch size (evaluation is a scan over batches).
      augment: apply CIFAR-style random crop and flip to training batches.
      mesh: optional ``jax.sharding.Mesh`` with a ``runs`` axis to spread runs on.
      progress: show a tqdm bar per training call.
      tx: optional optimizer replacing ``make_optimizer(optimizer)``; it must
        have the same state layout (a ``KeepPrunedState`` around an
        ``inject_hyperparams`` state with a ``learning_rate``), as
        :func:`lth_jax.transfer.make_finetune_optimizer` does. The learning
        rate still follows ``optimizer``'s schedule.
      gmp_slots: mask updates a run may hold (:mod:`lth_jax.gmp`); 0: no update branch.

    Attributes:
      device_data: the data on the device(s), as the compiled programs take it:
        ``{"train": (x, y), "val": (xs, ys, weights), "test": ...}`` (evaluation
        splits in padded batches, :func:`lth_jax.data.eval_batches`). Engines of
        the same shapes may share it.

    Example (one run of a small MLP; ``ds`` any object with the six arrays)::

        engine = Engine(model, ds, config.optimizer, steps=1000, batch_size=100, eval_every=100)
        params, bs = engine.init(keys)                       # keys: (runs, 2)
        masks = jax.vmap(lth_jax.masks.ones_like)(params)
        out = engine.fit(params, bs, masks, data_keys, dropout_keys)
        out.curves.test_accuracy[:, -1]                      # final test accuracy per run
    """

    model: nn.Module
    dataset: Any
    optimizer: Any
    steps: int
    batch_size: int
    eval_every: int
    eval_batch_size: int = 1000
    augment: bool = False
    mesh: Any = None
    progress: bool = True
    tx: Any = None
    gmp_slots: int = 0

    def __post_init__(self):
        ds = self.dataset
        self.n_train = int(ds.train_x.shape[0])
        if self.batch_size > self.n_train:
            raise ValueError(
                f"train.batch_size={self.batch_size} is larger than the training set "
                f"({self.n_train} examples)"
            )
        self.steps_per_epoch = self.n_train // self.batch_size
        self.schedule = make_schedule(self.optimizer, self.steps)
        dev = self.mesh.devices.flat[0] if self.mesh is not None else jax.devices()[0]
        self.fused_adam = bool(self.optimizer.get("fused_adam_cpu", False))
        if self.fused_adam:  # the config's Adam as one CPU kernel (lth_jax.fused_adam)
            fused_adam.prepare(self.optimizer, self.tx, dev.platform)
        self._own_tx = self.tx is None  # built here from the config (for_dataset builds it again)
        if self.tx is None:
            self.tx = make_optimizer(self.optimizer)
        replicated = parallel.sharding(self.mesh, replicate=True)
        put = (lambda a: jax.device_put(a, replicated)) if replicated is not None else jnp.asarray
        ebs = self.eval_batch_size
        self.device_data = {
            "train": (put(ds.train_x), put(ds.train_y.astype(np.int32))),
            "val": tuple(
                put(a) for a in pipeline.eval_batches(ds.val_x, ds.val_y.astype(np.int32), ebs)
            ),
            "test": tuple(
                put(a) for a in pipeline.eval_batches(ds.test_x, ds.test_y.astype(np.int32), ebs)
            ),
        }
        sample = np.asarray(ds.train_x[:1])
        self._sample = sample
        variables = jax.eval_shape(
            lambda k: self.model.init({"params": k}, sample, train=False), jax.random.PRNGKey(0)
        )
        self.has_batch_stats = "batch_stats" in variables
        # Run-batched outputs are pinned to the runs sharding, so a chunk's output
        # feeds the next chunk without a new compilation.
        out = {} if self.mesh is None else {"out_shardings": parallel.sharding(self.mesh)}
        # On CPUs, region-analysis copy insertion lets the scan body update the
        # optimizer moments in place instead of copying them every step (7% of a
        # LeNet-300-100 step on one core, 14% with a run per core: less memory
        # traffic); the arithmetic, so every bit, is unchanged.
        opts = (
            {"xla_cpu_copy_insertion_use_region_analysis": True} if dev.platform == "cpu" else None
        )
        self._chunk = jax.jit(self._chunk_impl, donate_argnums=(0,), compiler_options=opts, **out)
        self._init = jax.jit(jax.vmap(self._init_impl), **out)
        self._init_one = jax.jit(self._init_impl)
        self._new_runs = jax.jit(jax.vmap(self._new_runs_impl), **out)
        self._evaluate_runs = None
        self.compilations = 0  # times the chunk program was traced

    # ------------------------------------------------------------------ sharding
    def num_shards(self) -> int:
        """Devices the run axis is split over (the run batch is padded to a multiple)."""
        return parallel.num_shards(self.mesh)

    def shard(self, tree):
        """Places a run-batched tree on the mesh (runs axis split over devices)."""
        return parallel.shard(tree, self.mesh)

    # ------------------------------------------------------------------ init
    def _init_impl(self, key):
        variables = self.model.init({"params": key}, self._sample, train=False)
        return variables["params"], variables.get("batch_stats", {})

    def init(self, keys):
        """Initial ``(params, batch_stats)`` for a batch of keys ``(R, 2)``.

        One process: a one-run program per key, stacked on the host; the same
        values as the run-batched program, which compiles twice as long.
        """
        if jax.process_count() == 1:  # device_put, unlike jnp.asarray, compiles nothing
            outs = jax.device_get([self._init_one(k) for k in np.asarray(keys)])
            return jax.device_put(jax.tree.map(lambda *xs: np.stack(xs), *outs))
        padded, n = pad_runs(keys, self.num_shards())
        out = self._init(self.shard(padded))
        return out if n == padded.shape[0] else jax.tree.map(lambda a: a[:n], out)

    def _new_runs_impl(self, params, batch_stats, mask, data_key, dropout_key, gmp=None):
        params = masks_lib.apply(mask, params)
        opt_state = masks_lib.set_mask(self.tx.init(params), mask)
        return RunState(
            params=params,
            batch_stats=batch_stats,
            opt_state=opt_state,
            perm=jnp.full((self.n_train,), -1, jnp.int32),  # none drawn yet
            data_key=data_key,
            dropout_key=dropout_key,
            fail_step=jnp.int32(-1),
            gmp=gmp,
        )

    def new_runs(self, params, batch_stats, mask, data_keys, dropout_keys, gmp=None) -> RunState:
        """Fresh runs: params masked, a fresh optimizer state holding the mask."""
        if self.gmp_slots and gmp is None:
            gmp = gmp_lib.never(mask, self.gmp_slots)
        runs = (params, batch_stats, mask, data_keys, dropout_keys, gmp)
        return self._new_runs(*self.shard(runs))

    def chunk(self, runs: RunState, start: int, fixed_lr):
        """One call of the compiled chunk program: ``eval_every`` steps from ``start``, then
        evaluation. ``runs`` is donated; ``fixed_lr`` is a float32 rate (< 0: the schedule).
        ``runs`` are new (:meth:`new_runs`) or the output of the chunk that ended at
        ``start``: their data order is carried over (a run from elsewhere would keep a
        stale one). Returns ``(runs, (train_loss, val_loss, val_acc, test_loss,
        test_acc))``, per run."""
        return self._chunk(runs, jnp.int32(start), fixed_lr, self.device_data)

    def lower(self, params, batch_stats, mask, data_keys, dropout_keys):
        """The chunk program lowered for runs like these (``.compile()`` it to time compilation)."""
        runs = self.new_runs(
            *pad_runs((params, batch_stats, mask, data_keys, dropout_keys), self.num_shards())[0]
        )
        return self._chunk.lower(runs, jnp.int32(0), jnp.float32(-1), self.device_data)

    def check(self) -> None:
        """Traces one chunk of one run without computing it: raises if the model and the data
        (its shapes, the augmentation) do not fit together. Costs a trace, not a compilation."""
        key = jax.random.PRNGKey(0)

        def one():
            params, batch_stats = self._init_impl(key)
            mask = masks_lib.ones_like(params)
            run = self._new_runs_impl(params, batch_stats, mask, key, key)
            return self._run_chunk(run, jnp.int32(0), jnp.float32(-1), self.device_data)

        jax.eval_shape(one)

    def param_shapes(self):
        """``jax.ShapeDtypeStruct`` s of one run's params (no computation)."""
        return jax.eval_shape(self._init_impl, jax.random.PRNGKey(0))[0]

    def evaluate(self, params, batch_stats, split: str = "test"):
        """``(loss, accuracy)`` per run on ``split`` (``val`` or ``test``), in eval mode.

        ``params`` and ``batch_stats`` carry a leading run axis; one compiled
        evaluation for all runs (the same computation as the curves' points).
        """
        if self._evaluate_runs is None:
            self._evaluate_runs = jax.jit(jax.vmap(self._evaluate, in_axes=(0, 0, None)))
        return self._evaluate_runs(params, batch_stats, self.device_data[split])

    def for_dataset(self, dataset) -> Engine:
        """The same engine on another dataset, reusing the compiled programs when shapes match.

        The compiled chunk takes the data as an argument, so a dataset with the
        same array shapes (another random subset of the same size) needs no
        new compilation.
        """
        other = dataclasses.replace(self, dataset=dataset, tx=None if self._own_tx else self.tx)
        same = jax.tree.map(np.shape, other.device_data) == jax.tree.map(np.shape, self.device_data)
        if same and other.n_train == self.n_train:
            other._chunk, other._init, other._new_runs = self._chunk, self._init, self._new_runs
            other._init_one = self._init_one
        return other

    # ------------------------------------------------------------------ the program
    def _apply(self, params, batch_stats, x, train, rng=None):
        variables = {"params": params}
        if self.has_batch_stats:
            variables["batch_stats"] = batch_stats
        if train and self.has_batch_stats:
            logits, upd = self.model.apply(
                variables, x, train=True, rngs={"dropout": rng}, mutable=["batch_stats"]
            )
            return logits, upd["batch_stats"]
        if train:
            return self.model.apply(variables, x, train=True, rngs={"dropout": rng}), batch_stats
        return self.model.apply(variables, x, train=False), batch_stats

    def _evaluate(self, params, batch_stats, split):
        xs, ys, ws = split

        def body(carry, batch):
            x, y, w = batch
            logits, _ = self._apply(params, batch_stats, x, False)
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
            correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
            return (carry[0] + jnp.sum(w * losses), carry[1] + jnp.sum(w * correct)), None

        (loss, correct), _ = jax.lax.scan(body, (0.0, 0.0), (xs, ys, ws))
        n = jnp.sum(ws)
        return loss / n, correct / n

    def _run_chunk(self, run: RunState, s0, fixed_lr, data):
        """One run: ``eval_every`` steps from ``s0`` as a scan, then evaluation (:mod:`.loop`)."""
        return loop.run_chunk(self, run, s0, fixed_lr, data)

    def _chunk_impl(self, runs: RunState, s0, fixed_lr, data):
        """All runs: split over the devices, one after another within a device.

        Each run is computed by the same unbatched program whatever the number of
        runs or devices, so results are bit-identical on 1 or N devices.
        """
        self.compilations += 1  # runs at trace time only

        def local(runs, s0, fixed_lr, data):
            return jax.lax.map(lambda run: self._run_chunk(run, s0, fixed_lr, data), runs)

        if self.mesh is None:
            return local(runs, s0, fixed_lr, data)
        P = PartitionSpec
        return jax.shard_map(
            local,
            mesh=self.mesh,
            in_specs=(P("runs"), P(), P(), P()),
            out_specs=(P("runs"), P("runs")),
            check_vma=False,
        )(runs, s0, fixed_lr, data)

    # ------------------------------------------------------------------ driver
    def fit(
        self,
        params,
        batch_stats,
        mask,
        data_keys,
        dropout_keys,
        start_step: int = 0,
        *,
        snapshot_step: int | None = None,
        fixed_lr_step: int | FixedLR | None = None,
        desc: str = "train",
        on_chunk: Callable[[int, Callable[[], tuple[dict, dict]]], Any] | None = None,
        resume: tuple[int, dict, dict] | None = None,
        gmp=None,
        groups: int = 1,
    ) -> FitResult:
        """Trains a batch of runs from the given state: the one call every runner uses.

        Every argument carries a leading run axis of the same length ``R``
        (any ``R``: the batch is padded to a multiple of the devices and cut
        back). The runs are masked and get a fresh optimizer state holding the
        mask (:meth:`new_runs`), then train from ``start_step`` to ``steps``.
        Data order and dropout keys are folded from the global step, so a
        resumed call gives bit for bit what the uninterrupted one does.

        Args:
          params, batch_stats, mask: the starting state (params need not be masked).
          data_keys, dropout_keys: ``(R, 2)`` keys of the data order and dropout.
          start_step: the global step to start at (a multiple of ``eval_every``).
          snapshot_step: also return ``(params, batch_stats)`` at that step (a
            multiple of ``eval_every`` in ``[start_step, steps]``: the rewind point).
          fixed_lr_step: train at one constant rate throughout (fine-tuning): the
            schedule's at this step, or a :class:`~lth_jax.optim.FixedLR` rate.
          desc: progress-bar label (and the name used in warnings).
          on_chunk: ``on_chunk(step, get_state)`` after every chunk; ``get_state()``
            gives ``(state, meta)``, a host copy of the batch in progress to save
            as a mid-round checkpoint (call it before returning). It may raise
            to stop training. An ``on_chunk`` with a method ``on_eval(step, out,
            groups, n)`` gets the chunk's outputs and the list of run groups
            first (padded; ``n`` real runs).
          resume: ``(step, state, meta)`` as saved from ``get_state``: continues
            from there, bit for bit as an uninterrupted call. A state that does
            not fit these runs is reported on stderr and ignored.
          gmp: the runs' :class:`lth_jax.gmp.Schedule` (mask updates), or ``None``.
          groups: train the runs as this many equal groups (:mod:`lth_jax.loop`):
            same results; batches of ``groups`` times one size share its program
            (in one process, when each group splits evenly over the devices).

        Returns:
          A :class:`FitResult` for the ``R`` real runs.
        """
        inputs = (params, batch_stats, mask, data_keys, dropout_keys, gmp)
        if jax.process_count() == 1:  # padded and split over the devices from the host:
            inputs = jax.device_get(inputs)  # no padding or slicing programs to compile
        inputs, n = pad_runs(inputs, self.num_shards())
        k = groups if n % groups == 0 and (n // groups) % self.num_shards() == 0 else 1
        k = k if jax.process_count() == 1 else 1
        runs = [self.new_runs(*g) for g in parallel.split_runs(inputs, k)]
        progress = None
        if resume is not None:
            step, state, meta = resume
            try:
                restored, outs, snap = ckpt_lib.resume_state(
                    state, meta, runs[0], (inputs[0], inputs[1]), n, self.num_shards()
                )
                runs = [self.shard(g) for g in parallel.split_runs(restored, k)]
                progress = (step, outs, None if snap is None else parallel.split_runs(snap, k))
            except (ValueError, KeyError, IndexError) as e:
                print(
                    f"warning: the mid-round checkpoint of {desc} does not fit this run "
                    f"({e}); starting the round from its beginning",
                    file=sys.stderr,
                )
        hook = None if on_chunk is None else loop.fit_hook(on_chunk, n)
        runs, curves, snap = loop.run_chunks(
            self,
            runs,
            start_step,
            snapshot_step=snapshot_step,
            fixed_lr_step=fixed_lr_step,
            desc=desc,
            on_chunk=hook,
            resume=progress,
        )
        runs, snap = parallel.join_runs(runs), snap and parallel.join_runs(snap)
        # Results leave the devices (all processes'), are cut and put back: nothing compiles.
        cut = lambda t: (
            None if t is None else jax.device_put(jax.tree.map(lambda a: a[:n], to_host(t)))
        )
        curves = curves._replace(
            **{f: getattr(curves, f)[:n] for f in curves._fields if f != "steps"}
        )
        return FitResult(
            params=cut(runs.params),
            batch_stats=cut(runs.batch_stats),
            fail_step=to_host(runs.fail_step)[:n],
            curves=curves,
            snapshot=cut(snap),
            mask=cut(runs.opt_state.mask),
        )
