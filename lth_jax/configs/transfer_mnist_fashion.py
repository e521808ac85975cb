r"""Transfer MNIST -> Fashion-MNIST with LeNet-300-100: pretraining, dropout and tickets.

Commands (needs MNIST and Fashion-MNIST through TFDS, see ``lth_jax.data``; an
accelerator makes it minutes, 2 CPU cores make it hours)::

    lth-jax run --config preset:transfer_mnist_fashion --workdir runs/tr_mnist_fashion
    lth-jax run --config preset:transfer_mnist_fashion:finetune --workdir runs/tr_mf_ft
    lth-jax report runs/tr_mnist_fashion

Setup:

* Source: LeNet-300-100 (Frankle & Carbin 2019) on MNIST (55,000 training
  images, 5,000 for validation), Adam 1.2e-3, batch 60, 10,000 steps (about 11
  epochs), 3 trials.
* Target: Fashion-MNIST at 1%, 10% and 100% of its 55,000 training images
  (550, 5,500, 55,000; each trial draws its own subset), the whole test set.
  Fine-tuning: Adam 1.2e-3, batch 60, 5,000 steps for every size, every weight
  trains. Both tasks have 10 classes, but the classes are unrelated, so the
  head is **new** (``finetune.reuse_head = False``; setting it true would keep
  the MNIST head, which the runner allows only because the counts match).
* Arms: ``scratch`` / ``pretrained`` without and with dropout (0.5 on the
  hidden units, 0.2 on the input: Srivastava et al. 2014's rates), and
  ``pretrained+l2sp`` (L2-SP 1e-3 on the transferred kernels).
* ``full`` (default) adds ticket transfer: IMP on MNIST, 20% of each hidden
  layer and 10% of the output layer per round, rewinding to initialization
  (Frankle & Carbin's LeNet recipe), 7 rounds: the ticket keeps 21% of the
  hidden weights (48% of the head); carried to Fashion-MNIST from the MNIST
  init (``ticket_source``) and from a fresh init, against a random mask of the
  same per-layer counts and Fashion-MNIST's own ticket (7 IMP rounds per size
  and trial: most of the run's cost).

Published results this illustrates: features pretrained on one task and
fine-tuned on another beat training on the second alone when it has little data
(Yosinski et al. 2014); L2-SP fine-tuning beats plain L2 (Li, Grandvalet &
Davoine 2018); lottery tickets transfer across datasets, those found on larger
datasets best (Morcos et al. 2019, who carried tickets to Fashion-MNIST among
others).

What to expect (not run in this repository, which has no network: these are
expectations to check, not results). Dense LeNet-300-100 reaches about 98% on
MNIST (Frankle & Carbin 2019, Figure 3). MNIST strokes
are a weak prior for clothing silhouettes, so the gain from pretraining should
be largest at 1% (a few points at most) and vanish at 100%; dropout should
matter most where the training set is small. ``report.md`` gives the paired
effects with their spread over trials, so read the signs against the spread.

Ours: not run for this repository (no committed workdir), so no result of ours
is claimed. Run the command (on a GPU for CIFAR) and read the workdir's
``report.md``, which compares the arms paired by trial.
"""

import ml_collections

from lth_jax.configs import _common
from lth_jax.transfer.config import transfer_config

SETTINGS = ("full", "finetune")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    setting = _common.choice("transfer_mnist_fashion", arg, SETTINGS, "full")
    c = transfer_config()
    c.num_trials = 3
    c.dataset.name = "mnist"
    c.model.name = "lenet300_100"
    c.train.steps = 10_000
    c.train.batch_size = 60
    c.train.eval_every = 500
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1.2e-3
    c.imp.rounds = 7
    c.imp.prune_rate = 0.2
    c.imp.layer_rates = (("head", 0.1),)
    c.target.name = "fashion_mnist"
    c.target.train_sizes = (0.01, 0.1, 1.0)
    c.finetune.steps = 5_000
    c.finetune.batch_size = 60
    c.finetune.eval_every = 250
    c.finetune.optimizer.name = "adam"
    c.finetune.optimizer.learning_rate = 1.2e-3
    c.finetune.reuse_head = False
    c.finetune.dropout = 0.5
    c.finetune.input_dropout = 0.2
    c.finetune.l2_sp = 1e-3
    c.transfer.arms = _common.transfer_arms(setting)
    return c
