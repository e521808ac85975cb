"""Transfer learning: pretrain, fine-tune (with dropout, freezing, L2-SP), carry a ticket.

``lth-jax run`` with ``config.kind = "transfer"`` (start from
:func:`transfer_config`) does three things in ``<workdir>``:

1. **Source.** Pretrains on the source dataset (the usual ``dataset``,
   ``model``, ``train``, ``optimizer`` blocks) by running
   :func:`lth_jax.lottery.run` in ``<workdir>/source`` with the one arm
   ``ticket``: round 0 is the dense pretrained network of each trial; when a
   ticket arm is asked for, it goes on for ``imp.rounds`` IMP rounds to find
   the source ticket (open_lth's "pretrain on A, then IMP"). Or, with
   ``transfer.pretrained_workdir``, it loads an earlier lottery workdir (or
   transfer workdir: its ``source/``) instead: trial ``t`` here uses trial
   ``t`` there, round ``transfer.pretrained_round`` (default 0: the trained
   dense network). Its ``config.json`` must describe the source this config
   would pretrain (model, data, training, IMP settings and seed; arms, trials,
   rounds, ``train.eval_every`` and logging may differ, and the IMP settings
   too when only round 0's dense network is loaded: :mod:`lth_jax.transfer.source`),
   checked before anything is written, so the report's config line is true of it.
2. **Fine-tune** on the target dataset (block ``target``), once per size in
   ``target.train_sizes`` (a fraction of the target training set, or a count),
   with the ``finetune`` block's steps, batch size and optimizer, every arm of
   ``transfer.arms``:

   =========================  ==============================================
   arm                        starts from
   =========================  ==============================================
   ``scratch``                a fresh init of the target model
   ``pretrained``             the source weights, with the head rule below
   ``…+dropout``              the same, fine-tuned with ``finetune.dropout``
                              and ``finetune.input_dropout`` (arms without it
                              fine-tune with both set to 0)
   ``pretrained+l2sp``        L2 toward the pretrained weights
                              (:func:`lth_jax.regularizers_sp.add_l2_sp`,
                              strength ``finetune.l2_sp``) on every
                              transferred kernel; combines with ``+dropout``
   =========================  ==============================================

   **The head rule.** The output layer ``head`` is *new* (freshly
   initialized, the key of the ``scratch`` arm's head: arms differ only in the
   body) unless ``finetune.reuse_head`` is true **and** the source and target
   class counts are equal. Asking to reuse a head when the counts differ is an
   error, never a silent reuse or truncation (open_lth's bug: transfer with
   another class count silently used 10 outputs). This is big_vision's
   ``dont_load=['head/.*']``: see :func:`load_params`.

   **What trains** (``finetune.trainable``, pretrained arms only; scratch arms
   always train everything): ``all``; ``head`` (a linear probe on frozen
   features); ``all_but_first`` with ``finetune.freeze_layers = k``: the first
   ``k`` layers are frozen. A *layer* is a kernel and the leaves created after
   it up to the next kernel (its bias, its batch norm), in the order the model
   creates them (:func:`layer_groups`). Frozen parameters get an exact zero
   update (``optax.multi_transform`` with ``optax.set_to_zero()``, and weight
   decay, L1, L2 and max-norm sit inside the trained branch only), so they
   stay bit for bit what they were. Batch-norm running statistics of frozen
   layers still update in training mode (they are not parameters).

3. **Ticket transfer** (arms ``ticket_source``, ``ticket_source_reinit``,
   ``ticket_target``, ``random_mask``; needs ``imp.rounds >= 1``), trained on
   the target without dropout, with all weights trainable:

   ========================  ============================  =====================
   arm                       mask                          weights
   ========================  ============================  =====================
   ``ticket_source``         source ticket of round R      source rewind point
                                                           ``theta_k``
   ``ticket_source_reinit``  source ticket of round R      a fresh init
   ``random_mask``           random, the per-layer         source rewind point
                             counts of ``ticket_source``
   ``ticket_target``         IMP on the target itself      its own init / rewind
                             (``imp`` block, ``finetune``  point (a lottery run
                             training), round R            per size and trial)
   ========================  ============================  =====================

   (``R = imp.rounds``.) The head follows the head rule. A **new head** is
   masked at the source head's density (``transfer.ticket_head =
   "source_density"``, default: a random mask with ``round(d * n)`` of its
   ``n`` weights alive, ``d`` the source ticket head's density, so the overall
   density matches the target ticket's) or left dense (``"dense"``).
   ``ticket_target`` trains from ``imp.rewind_step`` (``k``), the others from
   step 0, all to ``finetune.steps``.

**Target data per trial.** Trial ``t`` of every size uses its own random
subset of the target training set (and validation split):
``get_dataset(target.name, seed=config.seed + t, train_size=size, ...)``, so
the spread over trials includes which examples were drawn. All arms of a
(size, trial) see the same examples, the same data order and dropout keys
(paired comparison). The test set is always the whole target test split. The
batch size is ``min(finetune.batch_size, n_train)`` (full batch when the
subset is smaller than a batch).

**Keys.** ``rng.derive(seed, trial, size_index, purpose)`` with purposes
``transfer_init`` (target init, shared by every arm: the new head of a
pretrained arm equals the scratch arm's head), ``transfer_data``,
``transfer_dropout``, ``transfer_head_mask``, ``transfer_random_mask``.

**Workdir.** ``config.json``; ``metrics.jsonl`` with one object per (size,
arm, trial): ``size_index``, ``train_size``, ``n_train``, ``arm``, ``trial``,
``density``, ``final_test_accuracy``, ``test_accuracy_at_best_val``,
``best_val_step``, curves, ...; ``source/`` (the source lottery workdir);
``target_imp/`` (the target lottery runs of ``ticket_target``);
``report.md`` / ``report.png`` (:func:`lth_jax.report.transfer.write_report`). Finished sizes are
kept: running the same command again resumes after the last finished size.

**Engine.** Training is :meth:`lth_jax.train.Engine.fit` with another
optimizer (:func:`make_finetune_optimizer`); the engine moves its compiled
programs to the per-trial subsets of the same shapes
(:meth:`~lth_jax.train.Engine.for_dataset`).

**Modules.** :mod:`lth_jax.transfer.config` (the blocks, the arms, validation),
:mod:`lth_jax.transfer.surgery` (layer order, freezing, head rule, loading
weights, carrying masks: pure functions), :mod:`lth_jax.transfer.runner` (the
fine-tuning optimizer and the runner); the report is
:mod:`lth_jax.report.transfer`. Their public names are re-exported here.
"""

from __future__ import annotations

from lth_jax.transfer.config import (
    BASES,
    MODIFIERS,
    TICKET_ARMS,
    TICKET_HEADS,
    parse_arm,
    source_config,
    target_lottery_config,
    transfer_config,
    validate,
)
from lth_jax.transfer.runner import make_finetune_optimizer, run
from lth_jax.transfer.surgery import (
    HEAD,
    TRAINABLE,
    head_is_new,
    layer_groups,
    load_params,
    param_order,
    trainable_tree,
    transfer_mask,
)

__all__ = [
    "BASES",
    "MODIFIERS",
    "TICKET_ARMS",
    "TICKET_HEADS",
    "HEAD",
    "TRAINABLE",
    "transfer_config",
    "validate",
    "source_config",
    "target_lottery_config",
    "parse_arm",
    "param_order",
    "layer_groups",
    "trainable_tree",
    "head_is_new",
    "load_params",
    "transfer_mask",
    "make_finetune_optimizer",
    "run",
]
