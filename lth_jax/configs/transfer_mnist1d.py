r"""Transfer on MNIST-1D: pretrain on digits 0-4, fine-tune on digits 5-9 (offline, CPU).

Commands::

    lth-jax run --config preset:transfer_mnist1d --workdir runs/transfer_mnist1d
    lth-jax run --config preset:transfer_mnist1d:finetune --workdir runs/tr_ft
    lth-jax report runs/transfer_mnist1d

The committed results (``experiments/results/transfer/``) are the default
(``full``) setting, about 10 minutes on 2 shared CPU cores (most of it XLA
compilation: one program per target size and arm group, and one per target
IMP run).

Why this split. MNIST-1D's ten classes are ten 1-D templates, shifted, scaled,
sheared and noised the same way. Digits 0-4 and 5-9 share no class but share
every nuisance (shift, noise, correlated noise, scale), so features that learned
to see past them on 0-4 can help on 5-9. Both tasks have 5 classes, but
different ones, so the head is new (``finetune.reuse_head = False``; the runner
would allow reusing it only because the counts match).

Setup:

* Source: MLP 40-100-100-5 on digits 0-4 (about 1,500 training signals after
  500 for validation), Adam 1e-3, batch 100, 3,000 steps, 5 trials.
* Target: digits 5-9, training subsets of 1%, 10% and 100% of the about 1,500
  training signals (about 15, 150 and 1,500; each trial draws its own subset),
  the whole 5-9 test split (about 500). Fine-tuning: Adam 1e-3, batch
  ``min(100, n)``, 1,000 steps for every size, every parameter trains, new head.
* Arms: ``scratch`` / ``pretrained``, each without and with dropout (0.2 after
  each hidden layer, the rate ``regularizers_mnist1d.py`` picked on validation
  data for this MLP), and ``pretrained+l2sp`` (L2-SP 0.01 on the transferred
  kernels, Li et al. 2018).
* ``full`` adds ticket transfer: IMP on the source for 3 rounds at 50% per
  layer (head 25%), rewinding to initialization, gives a source ticket at
  12.5% of the hidden weights (42% of the head); on the target it is trained
  from the source init (``ticket_source``) and from a fresh init
  (``ticket_source_reinit``), against a random mask of the same per-layer
  counts on the source init (``random_mask``) and the target's own ticket (the
  same IMP run on the target subset, ``ticket_target``). The new head is
  masked at the source head's density.

Published results this illustrates: Yosinski et al. (2014, "How transferable
are features in deep neural networks?") split ImageNet's classes into two
halves A and B, as digits 0-4 and 5-9 here, and found that features pretrained
on A and fine-tuned on B generalize better than training on B alone; Li,
Grandvalet & Davoine (2018) report L2-SP fine-tuning above plain L2
fine-tuning; Morcos et al. (2019, "One ticket to win them all") report that
lottery tickets found on one dataset transfer to another, often about as well
as the target's own tickets. This small MLP is a weak test of all three.

Ours (paired by trial; generated from experiments/results/transfer/; ``report.md`` gives every
arm's mean and spread):

<!-- generated from experiments/results/transfer: begin -->
- pretraining (no dropout): pretrained vs scratch: pretrained above scratch in 5/5 trials with 15 to
  151 target examples (mean paired difference +3.0 to +5.3 points); no clear difference elsewhere.
- pretraining (with dropout): pretrained+dropout vs scratch+dropout: pretrained+dropout above
  scratch+dropout in 5/5 trials with 15 to 151 target examples (mean paired difference +3.4 to +3.5
  points); no clear difference elsewhere.
- dropout, pretrained: pretrained+dropout vs pretrained: no clear difference at any target size (3
  target sizes).
- dropout, scratch: scratch+dropout vs scratch: scratch+dropout above scratch in 5/5 trials with 151
  target examples (mean paired difference +2.4 points); no clear difference elsewhere.
- L2-SP, pretrained: pretrained+l2sp vs pretrained: pretrained above pretrained+l2sp in 5/5 trials
  with 1,507 target examples (mean paired difference +2.2 points); no clear difference elsewhere.
- source ticket vs target ticket: ticket_source vs ticket_target: ticket_source above ticket_target
  in 5/5 trials with 151 target examples (mean paired difference +2.7 points); ticket_target above
  ticket_source in 5/5 trials with 1,507 target examples (mean paired difference +6.0 points); no
  clear difference elsewhere.
- source ticket vs its reinit: ticket_source vs ticket_source_reinit: ticket_source_reinit above
  ticket_source in 4/5 trials with 1,507 target examples (mean paired difference +1.1 points); no
  clear difference elsewhere.
- source ticket vs random mask: ticket_source vs random pruning: no clear difference at any target
  size (3 target sizes).
<!-- generated from experiments/results/transfer: end -->
"""

import ml_collections

from lth_jax.configs import _common
from lth_jax.transfer.config import transfer_config

SETTINGS = ("full", "finetune", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    setting = _common.choice("transfer_mnist1d", arg, SETTINGS, "full")
    c = transfer_config()
    c.seed = 0
    c.num_trials = 5
    # Source: digits 0-4.
    c.dataset.name = "mnist1d"
    c.dataset.classes = (0, 1, 2, 3, 4)
    c.model.name = "mlp"
    c.model.kwargs.features = (100, 100)
    c.train.steps = 3000
    c.train.batch_size = 100
    c.train.eval_every = 250
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    # Source ticket (only used by the ticket arms).
    c.imp.rounds = 3
    c.imp.prune_rate = 0.5
    c.imp.layer_rates = (("head", 0.25),)
    c.imp.rewind_step = 0
    # Target: digits 5-9 at three training-set sizes.
    c.target.name = "mnist1d"
    c.target.classes = (5, 6, 7, 8, 9)
    c.target.train_sizes = (0.01, 0.1, 1.0)
    c.finetune.steps = 1000
    c.finetune.batch_size = 100
    c.finetune.eval_every = 100
    c.finetune.optimizer.name = "adam"
    c.finetune.optimizer.learning_rate = 1e-3
    c.finetune.trainable = "all"
    c.finetune.reuse_head = False
    c.finetune.dropout = 0.2
    c.finetune.input_dropout = 0.0
    c.finetune.l2_sp = 0.01
    c.transfer.arms = _common.transfer_arms(setting)
    c.transfer.ticket_head = "source_density"
    if setting == "tiny":  # a smoke test: seconds of training
        c.num_trials = 2
        c.model.kwargs.features = (32, 16)
        c.train.steps = 100
        c.train.eval_every = 50
        c.finetune.steps = 100
        c.finetune.eval_every = 50
        c.target.train_sizes = (0.1,)
        c.transfer.arms = ("scratch", "pretrained", "pretrained+dropout")
    return c
