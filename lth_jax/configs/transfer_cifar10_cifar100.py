r"""Transfer CIFAR-10 -> CIFAR-100 with ResNet-20: a new 100-way head, dropout, L2-SP, tickets.

Commands (needs CIFAR-10 and CIFAR-100 through TFDS; meant for an accelerator)::

    lth-jax run --config preset:transfer_cifar10_cifar100:finetune --workdir runs/tr_c10_c100_ft
    lth-jax run --config preset:transfer_cifar10_cifar100 --workdir runs/tr_c10_c100
    lth-jax report runs/tr_c10_c100_ft

Setup:

* Source: ResNet-20 (batch norm) on CIFAR-10 (45,000 training images, 5,000
  for validation), random crop and flip, SGD momentum 0.9, batch 128,
  learning rate 0.1 with a cosine decay, coupled L2 1e-4, 30,000 steps (about
  85 epochs), 3 trials.
* Target: CIFAR-100 at 10% and 100% of its 45,000 training images (4,500 and
  45,000), the whole test set. The 10-way head cannot serve 100 classes: the
  fine-tuned network gets a **new** 100-way head (asking
  ``finetune.reuse_head = True`` here is an error). Fine-tuning: SGD momentum
  0.9, batch 128, learning rate 0.05 with a cosine decay, coupled L2 1e-4,
  20,000 steps for both sizes, crop and flip. Batch-norm statistics of the
  body are carried over with its weights.
* Arms: ``scratch`` / ``pretrained`` without and with dropout (0.3 on the
  pooled features before the head), ``pretrained+l2sp`` (L2-SP 1e-3).
* ``full`` adds ticket transfer: global IMP on CIFAR-10, 20% per round, 5
  rounds (33% of the weights), rewinding to step 1,000 (Frankle et al. 2020);
  carried to CIFAR-100 with a new head masked at the source head's density,
  against a random mask and CIFAR-100's own ticket (5 IMP rounds per size and
  trial: most of the cost).

Published results this illustrates: Yosinski et al. (2014) on transferring and
fine-tuning features; Li, Grandvalet & Davoine (2018): L2-SP beats L2
fine-tuning on image classification transfer; Morcos et al. (2019): tickets
found on one image dataset (CIFAR-10 among them) transfer to others.

What to expect (not run in this repository, which has no network: to be
checked, not results): ResNet-20 reaches about 91% on CIFAR-10 (8.75% error
in He et al. 2016, Table 6). CIFAR-10 features should help clearly at 10%
of CIFAR-100 and little at 100%; with a small pretrained ResNet dropout on the
pooled features is expected to change little. The report's paired effects say
by how much, with the spread over trials.

Ours: not run for this repository (no committed workdir), so no result of ours
is claimed. Run the command (on a GPU for CIFAR) and read the workdir's
``report.md``, which compares the arms paired by trial.
"""

import ml_collections

from lth_jax.configs import _common
from lth_jax.transfer.config import transfer_config

SETTINGS = ("full", "finetune")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    setting = _common.choice("transfer_cifar10_cifar100", arg, SETTINGS, "full")
    c = transfer_config()
    c.num_trials = 3
    c.dataset.name = "cifar10"
    c.dataset.augment = True
    c.model.name = "resnet20"
    c.train.steps = 30_000
    c.train.batch_size = 128
    c.train.eval_every = 1_000
    c.optimizer.name = "momentum"
    c.optimizer.momentum = 0.9
    c.optimizer.learning_rate = 0.1
    c.optimizer.schedule = "cosine"
    c.optimizer.l2 = 1e-4
    c.imp.rounds = 5
    c.imp.prune_rate = 0.2
    c.imp.scope = "global"
    c.imp.rewind_step = 1_000
    c.target.name = "cifar100"
    c.target.train_sizes = (0.1, 1.0)
    c.target.augment = True
    c.finetune.steps = 20_000
    c.finetune.batch_size = 128
    c.finetune.eval_every = 1_000
    c.finetune.optimizer.name = "momentum"
    c.finetune.optimizer.momentum = 0.9
    c.finetune.optimizer.learning_rate = 0.05
    c.finetune.optimizer.schedule = "cosine"
    c.finetune.optimizer.l2 = 1e-4
    c.finetune.reuse_head = False
    c.finetune.dropout = 0.3
    c.finetune.input_dropout = 0.0
    c.finetune.l2_sp = 1e-3
    c.transfer.arms = _common.transfer_arms(setting)
    return c
