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

Rules stated exactly:

* **Data order.** Step ``s`` uses batch ``s mod E`` of the permutation drawn
  from ``fold_in(data_key, s // E)`` where ``E = n_train // batch_size``
  (the remainder of an epoch is dropped). Two runs with the same data key see
  the same batches.
* **Dropout.** Step ``s`` uses ``fold_in(dropout_key, s)``.
* **Learning rate.** Step ``s`` uses ``schedule(s)`` (or ``schedule(fixed)``
  when a fixed step is given, as fine-tuning does); the optimizer gets it
  through ``optax.inject_hyperparams``, so the schedule can be replayed from any
  step (learning-rate rewinding).
* **Early stopping.** The early-stopping iteration is the eval step with the
  lowest validation loss (first one on ties), as Frankle & Carbin report; the
  test accuracy there is reported beside the final one.
* **Non-finite loss.** A run whose training loss becomes NaN or Inf stops
  updating from that step on; its ``fail_step`` records the step. Other runs
  are unaffected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from lth_jax import masks as masks_lib
from lth_jax.parallel import to_host

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "RunState",
    "Curves",
    "Engine",
    "make_schedule",
    "make_optimizer",
    "optimizer_chain",
    "cross_entropy",
    "early_stop",
    "curve_fields",
]

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step", "linear")


# ----------------------------------------------------------------------------- optimizer


def make_schedule(opt, total_steps: int) -> Callable[[Any], Any]:
    """The learning-rate schedule of an ``optimizer`` config block.

    ``constant``, ``cosine`` (to 0 at ``total_steps``), ``linear`` (to 0) or
    ``step`` (multiply by ``step_factor`` at each of ``step_boundaries``, given
    as fractions of ``total_steps``), after ``warmup_steps`` of linear warmup
    from 0.

    Example:
      >>> import ml_collections
      >>> opt = ml_collections.ConfigDict(dict(learning_rate=0.1, schedule="step",
      ...     warmup_steps=0, step_boundaries=(0.5,), step_factor=0.1))
      >>> round(float(make_schedule(opt, 100)(60)), 4)
      0.01
    """
    lr = float(opt.learning_rate)
    warmup = int(opt.get("warmup_steps", 0) or 0)
    name = opt.get("schedule", "constant")
    rest = max(total_steps - warmup, 1)
    if name == "constant":
        main = optax.constant_schedule(lr)
    elif name == "cosine":
        main = optax.cosine_decay_schedule(lr, rest)
    elif name == "linear":
        main = optax.linear_schedule(lr, 0.0, rest)
    elif name == "step":
        bounds = {
            max(int(round(float(b) * total_steps)) - warmup, 0): float(opt.get("step_factor", 0.1))
            for b in opt.get("step_boundaries", ())
        }
        main = optax.piecewise_constant_schedule(lr, bounds)
    else:
        raise ValueError(f"optimizer.schedule must be one of {SCHEDULES}, got {name!r}")
    if warmup <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def optimizer_chain(opt, learning_rate) -> optax.GradientTransformation:
    """The chain inside :func:`make_optimizer`'s ``inject_hyperparams`` (no mask).

    ``opt`` is the config's ``optimizer`` block, ``learning_rate`` a float, a
    schedule or the injected (traced) learning rate. Used as is by
    :mod:`lth_jax.transfer` inside its freezing and L2-SP wrappers.
    """
    from lth_jax import regularizers as reg

    name = opt.name
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name must be one of {OPTIMIZERS}, got {name!r}")
    parts = []
    if opt.get("l2", 0.0):
        parts.append(reg.add_l2(float(opt.l2)))
    if name == "sgd":
        parts.append(optax.sgd(learning_rate))
    elif name == "momentum":
        parts.append(
            optax.sgd(learning_rate, momentum=float(opt.momentum), nesterov=bool(opt.nesterov))
        )
    else:
        parts.append(optax.adam(learning_rate))
    if opt.get("weight_decay", 0.0):
        parts.append(reg.decoupled_weight_decay(float(opt.weight_decay), learning_rate))
    if opt.get("l1", 0.0):
        parts.append(reg.prox_l1(float(opt.l1), learning_rate))
    if opt.get("max_norm", 0.0):
        parts.append(reg.max_norm(float(opt.max_norm)))
    return optax.chain(*parts)


def make_optimizer(opt) -> optax.GradientTransformation:
    """The optax chain of an ``optimizer`` config block, wrapped to keep masks.

    The chain, in order (each part only when its strength is non-zero)::

        keep_pruned(inject_hyperparams(chain(
            add_l2(l2),                        # coupled L2: before the optimizer
            sgd | momentum | adam,             # scaled by the injected learning rate
            decoupled_weight_decay(wd, lr),    # decoupled: after the optimizer
            prox_l1(l1, lr),                   # proximal L1: exact zeros
            max_norm(c),                       # projection: last
        )))

    ``adamw`` is ``adam`` with ``weight_decay`` decoupled (as above). The learning
    rate is a hyperparameter set by the engine every step from the schedule.
    """
    if opt.name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name must be one of {OPTIMIZERS}, got {opt.name!r}")

    def factory(learning_rate):
        return optimizer_chain(opt, learning_rate)

    return masks_lib.keep_pruned(
        optax.inject_hyperparams(factory)(learning_rate=float(opt.learning_rate))
    )


def _set_learning_rate(opt_state: masks_lib.KeepPrunedState, lr):
    inner = opt_state.inner_state
    hp = dict(inner.hyperparams)
    hp["learning_rate"] = jnp.asarray(lr, dtype=jnp.result_type(hp["learning_rate"]))
    return opt_state._replace(inner_state=inner._replace(hyperparams=hp))


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy with integer labels."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


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


# ----------------------------------------------------------------------------- engine


class RunState(NamedTuple):
    """The carried state of a batch of runs (every leaf has a leading run axis)."""

    params: Any
    batch_stats: Any
    opt_state: Any
    perm: jax.Array
    data_key: jax.Array
    dropout_key: jax.Array
    fail_step: jax.Array


class Curves(NamedTuple):
    """Evaluation curves, arrays of shape ``(runs, evals)``; ``steps`` is ``(evals,)``."""

    steps: np.ndarray
    train_loss: np.ndarray
    val_loss: np.ndarray
    val_accuracy: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray


def _stable_argsort_u32(keys):
    """Stable argsort of uint32 ``keys`` with ``n < 2**16``: two single-operand sorts.

    A stable sort by a 32-bit key is a stable sort by its low 16 bits followed by
    a stable sort by its high 16 bits (LSD radix); each is one sort of the unique
    uint32 values ``digit << 16 | position``, which XLA's CPU sort does several
    times faster than a (key, value) sort.
    """
    n = keys.shape[0]
    pos = jax.lax.iota(jnp.uint32, n)
    order = jax.lax.sort((keys << 16) | pos) & 0xFFFF
    high = jax.lax.sort(((keys[order] >> 16) << 16) | pos) & 0xFFFF
    return order[high]


def _permutation(key, n: int):
    """``jax.random.permutation(key, n)`` as int32, bit for bit, faster for ``n < 2**16``.

    Same rounds, keys and stable sorts as JAX's shuffle (``ceil(3 ln n / ln
    (2**32 - 1))`` rounds of ``split``, 32 random bits per element and a stable
    sort by them), with the sort done by :func:`_stable_argsort_u32`: a
    permutation of MNIST's 55,000 training examples takes about 10 ms instead
    of 23 ms on a CPU core. Larger ``n`` use ``jax.random.permutation``.
    ``tests/test_benchmark.py`` checks the two agree.
    """
    if n >= 2**16:
        return jax.random.permutation(key, n).astype(jnp.int32)
    rounds = int(np.ceil(3 * np.log(max(1, n)) / np.log(np.iinfo(np.uint32).max)))
    x = jax.lax.iota(jnp.int32, n)
    for _ in range(rounds):
        key, sub = jax.random.split(key)
        x = x[_stable_argsort_u32(jax.random.bits(sub, (n,), jnp.uint32))]
    return x


def _pad_eval(x, y, batch):
    n = x.shape[0]
    batch = min(batch, n)
    nb = -(-n // batch)
    pad = nb * batch - n
    w = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    y = np.concatenate([y, np.zeros((pad,), y.dtype)])
    return (
        x.reshape(nb, batch, *x.shape[1:]),
        y.reshape(nb, batch),
        w.reshape(nb, batch),
    )


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
        if self.tx is None:
            self.tx = make_optimizer(self.optimizer)
        replicated = self._sharding(replicate=True)
        put = (lambda a: jax.device_put(a, replicated)) if replicated is not None else jnp.asarray
        ebs = self.eval_batch_size
        self._data = {
            "train": (put(ds.train_x), put(ds.train_y.astype(np.int32))),
            "val": tuple(put(a) for a in _pad_eval(ds.val_x, ds.val_y.astype(np.int32), ebs)),
            "test": tuple(put(a) for a in _pad_eval(ds.test_x, ds.test_y.astype(np.int32), ebs)),
        }
        sample = np.asarray(ds.train_x[:1])
        self._sample = sample
        variables = jax.eval_shape(
            lambda k: self.model.init({"params": k}, sample, train=False), jax.random.PRNGKey(0)
        )
        self.has_batch_stats = "batch_stats" in variables
        # Run-batched outputs are pinned to the runs sharding, so a chunk's output
        # feeds the next chunk without a new compilation.
        out = {} if self.mesh is None else {"out_shardings": self._sharding()}
        # On CPUs, region-analysis copy insertion lets the scan body update the
        # optimizer moments in place instead of copying them every step (7% of a
        # LeNet-300-100 step on one core, 14% with a run per core: less memory
        # traffic); the arithmetic, so every bit, is unchanged.
        dev = self.mesh.devices.flat[0] if self.mesh is not None else jax.devices()[0]
        opts = (
            {"xla_cpu_copy_insertion_use_region_analysis": True} if dev.platform == "cpu" else None
        )
        self._chunk = jax.jit(self._chunk_impl, donate_argnums=(0,), compiler_options=opts, **out)
        self._init = jax.jit(jax.vmap(self._init_impl), **out)
        self._new_runs = jax.jit(jax.vmap(self._new_runs_impl), **out)
        self.compilations = 0  # times the chunk program was traced

    # ------------------------------------------------------------------ sharding
    def _sharding(self, replicate=False):
        if self.mesh is None:
            return None
        from jax.sharding import NamedSharding, PartitionSpec

        return NamedSharding(self.mesh, PartitionSpec() if replicate else PartitionSpec("runs"))

    def num_shards(self) -> int:
        return 1 if self.mesh is None else int(self.mesh.shape["runs"])

    def shard(self, tree):
        """Places a run-batched tree on the mesh (runs axis split over devices)."""
        s = self._sharding()
        return tree if s is None else jax.device_put(tree, s)

    # ------------------------------------------------------------------ init
    def _init_impl(self, key):
        variables = self.model.init({"params": key}, self._sample, train=False)
        return variables["params"], variables.get("batch_stats", {})

    def init(self, keys):
        """Initial ``(params, batch_stats)`` for a batch of keys ``(R, 2)``."""
        from lth_jax.parallel import pad_runs

        padded, n = pad_runs(keys, self.num_shards())
        out = self._init(self.shard(padded))
        return out if n == padded.shape[0] else jax.tree.map(lambda a: a[:n], out)

    def _new_runs_impl(self, params, batch_stats, mask, data_key, dropout_key):
        params = masks_lib.apply(mask, params)
        opt_state = masks_lib.set_mask(self.tx.init(params), mask)
        return RunState(
            params=params,
            batch_stats=batch_stats,
            opt_state=opt_state,
            perm=jnp.zeros((self.n_train,), jnp.int32),
            data_key=data_key,
            dropout_key=dropout_key,
            fail_step=jnp.int32(-1),
        )

    def new_runs(self, params, batch_stats, mask, data_keys, dropout_keys) -> RunState:
        """Fresh runs: params masked, a fresh optimizer state holding the mask."""
        return self._new_runs(*self.shard((params, batch_stats, mask, data_keys, dropout_keys)))

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

    def _run_step(self, run: RunState, s, lr, train):
        train_x, train_y = train
        spe = self.steps_per_epoch
        i = s % spe
        perm = jax.lax.cond(
            i == 0,
            lambda: _permutation(jax.random.fold_in(run.data_key, s // spe), self.n_train),
            lambda: run.perm,
        )
        idx = jax.lax.dynamic_slice(perm, (i * self.batch_size,), (self.batch_size,))
        x, y = train_x[idx], train_y[idx]
        step_key = jax.random.fold_in(run.dropout_key, s)
        if self.augment:
            from lth_jax.data import random_crop_flip

            x = random_crop_flip(jax.random.fold_in(step_key, 1), x)

        def loss_fn(p):
            logits, bs = self._apply(p, run.batch_stats, x, True, step_key)
            return cross_entropy(logits, y), bs

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(run.params)
        opt_state = _set_learning_rate(run.opt_state, lr)
        updates, opt_state = self.tx.update(grads, opt_state, run.params)
        new_params = optax.apply_updates(run.params, updates)
        alive = run.fail_step < 0
        finite = jnp.isfinite(loss)
        ok = alive & finite
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
        run = run._replace(
            params=keep(new_params, run.params),
            batch_stats=keep(batch_stats, run.batch_stats),
            opt_state=keep(opt_state, run.opt_state),
            perm=perm,
            fail_step=jnp.where(alive & ~finite, s, run.fail_step),
        )
        return run, loss

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

    def _run_chunk(self, run: RunState, s0, fixed_lr_step, data):
        """One run: ``eval_every`` steps from ``s0`` as a scan, then evaluation."""
        spe = self.steps_per_epoch
        perm0 = _permutation(jax.random.fold_in(run.data_key, s0 // spe), self.n_train)
        run = run._replace(perm=perm0.astype(jnp.int32))

        def body(run, s):
            lr = self.schedule(jnp.where(fixed_lr_step >= 0, fixed_lr_step, s))
            return self._run_step(run, s, lr, data["train"])

        steps = s0 + jnp.arange(self.eval_every, dtype=jnp.int32)
        run, losses = jax.lax.scan(body, run, steps)
        val_loss, val_acc = self._evaluate(run.params, run.batch_stats, data["val"])
        test_loss, test_acc = self._evaluate(run.params, run.batch_stats, data["test"])
        return run, (jnp.mean(losses), val_loss, val_acc, test_loss, test_acc)

    def _chunk_impl(self, runs: RunState, s0, fixed_lr_step, data):
        """All runs: split over the devices, one after another within a device.

        Each run is computed by the same unbatched program whatever the number of
        runs or devices, so results are bit-identical on 1 or N devices.
        """
        self.compilations += 1  # runs at trace time only

        def local(runs, s0, fixed_lr_step, data):
            return jax.lax.map(lambda run: self._run_chunk(run, s0, fixed_lr_step, data), runs)

        if self.mesh is None:
            return local(runs, s0, fixed_lr_step, data)
        from jax.sharding import PartitionSpec as P

        return jax.shard_map(
            local,
            mesh=self.mesh,
            in_specs=(P("runs"), P(), P(), P()),
            out_specs=(P("runs"), P("runs")),
            check_vma=False,
        )(runs, s0, fixed_lr_step, data)

    # ------------------------------------------------------------------ driver
    def train(
        self,
        runs: RunState,
        start_step: int,
        snapshot_step: int | None = None,
        fixed_lr_step: int | None = None,
        desc: str = "train",
        on_chunk: Callable[..., Any] | None = None,
        resume: tuple[int, list, Any] | None = None,
    ):
        """Trains ``runs`` from ``start_step`` to ``self.steps``.

        Args:
          runs: batched :class:`RunState` (donated: do not reuse it).
          start_step: global step to start at (a multiple of ``eval_every``).
          snapshot_step: if given (a multiple of ``eval_every`` in
            ``[start_step, steps]``), also return copies of ``(params,
            batch_stats)`` at that step (the rewind point).
          fixed_lr_step: evaluate the schedule at this step throughout
            (fine-tuning at the final learning rate).
          desc: progress-bar label.
          on_chunk: optional ``on_chunk(step, runs, outs, snapshot)``, called
            after every chunk with the global step reached, the current runs,
            the evaluation outputs so far (one tuple of per-run arrays per
            chunk) and the snapshot so far (or ``None``). ``runs`` is donated to
            the next chunk, so read it (e.g. to save it) before returning. It
            may raise to stop training (a checkpoint-and-exit on a signal).
          resume: ``(step, outs, snapshot)`` as ``on_chunk`` saw them, with
            ``runs`` the runs at that ``step``: continues an earlier call from
            there. Data order and dropout keys are folded from the global step,
            so the result is bit for bit the uninterrupted call's.

        Returns:
          ``(runs, curves, snapshot)``.
        """
        e = self.eval_every
        if start_step % e or self.steps % e:
            raise ValueError(
                f"start step {start_step} and train.steps {self.steps} must be multiples of "
                f"train.eval_every={e}"
            )
        snapshot = None
        outs, eval_steps = [], []
        first = start_step
        if resume is not None:
            first, outs, snapshot = int(resume[0]), list(resume[1]), resume[2]
            if first % e or not start_step < first <= self.steps:
                raise ValueError(
                    f"cannot resume at step {first}: it must be a multiple of "
                    f"train.eval_every={e} in ({start_step}, {self.steps}]"
                )
            if len(outs) != (first - start_step) // e:
                raise ValueError(
                    f"cannot resume at step {first}: {len(outs)} evaluations given, "
                    f"{(first - start_step) // e} expected"
                )
            eval_steps = list(range(start_step + e, first + 1, e))
        elif snapshot_step == start_step:
            snapshot = jax.tree.map(jnp.copy, (runs.params, runs.batch_stats))
        fixed = jnp.int32(-1 if fixed_lr_step is None else fixed_lr_step)
        bar = tqdm(
            total=self.steps - start_step,
            initial=first - start_step,
            desc=desc,
            disable=not self.progress,
            leave=False,
            unit="step",
            dynamic_ncols=True,
        )
        try:
            for s0 in range(first, self.steps, e):
                runs, out = self._chunk(runs, jnp.int32(s0), fixed, self._data)
                outs.append(out)
                eval_steps.append(s0 + e)
                if snapshot_step == s0 + e:
                    snapshot = jax.tree.map(jnp.copy, (runs.params, runs.batch_stats))
                if self.progress:
                    jax.block_until_ready(out[1])
                    bar.set_postfix(val_loss=f"{float(jnp.mean(out[1])):.3f}")
                bar.update(e)
                if on_chunk is not None:
                    on_chunk(s0 + e, runs, outs, snapshot)
        finally:
            bar.close()
        outs = to_host(outs)
        stack = lambda j: np.stack([o[j] for o in outs], axis=1) if outs else np.zeros((0, 0))
        curves = Curves(
            steps=np.asarray(eval_steps, np.int64),
            train_loss=stack(0),
            val_loss=stack(1),
            val_accuracy=stack(2),
            test_loss=stack(3),
            test_accuracy=stack(4),
        )
        return runs, curves, snapshot
