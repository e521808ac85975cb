r"""ResNet-20 on CIFAR-10: IMP with rewinding to step k (or warmup), Frankle et al. (2020).

Commands (the argument picks how the ticket is made trainable)::

    # Frankle et al. (2020): rewind the weights to step k = 2,000
    lth-jax run --config preset:resnet20_cifar10:rewind --workdir runs/r20_k2000
    # learning-rate warmup to 0.03 over 20,000 steps, rewind to init (the learning rate and
    # warmup Frankle & Carbin 2019 use for their CIFAR ResNet-18, on this 63,000-step schedule)
    lth-jax run --config preset:resnet20_cifar10:warmup --workdir runs/r20_warmup
    # the failing baseline: rewind to init, no warmup
    lth-jax run --config preset:resnet20_cifar10:init --workdir runs/r20_init

Setup (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis", Table 1; open_lth's ``cifar_resnet_20``): ResNet-20 (16-32-64
channels, batch norm, projection shortcuts, He-normal init), random crop and
flip augmentation, SGD with momentum 0.9, batch 128, learning rate 0.1 divided
by 10 at steps 32,000 and 48,000, 63,000 steps, coupled L2 1e-4, 5,000
training images held out for validation. Global magnitude pruning of 20% of
all kernels per round (the output layer included, as open_lth), 12 rounds
(down to 6.9% of the weights), 3 trials. Where open_lth differs: it trains
on all 50,000 training images, applies its weight decay to every parameter
(here L2 on the kernels), draws batch-norm scales from U(0, 1) (here 1) and
uses an untruncated Kaiming normal (here flax's truncated ``he_normal``).

Published result (Frankle et al. 2020, Table 1 and Sections 3-4): dense
ResNet-20 reaches 91.7 +- 0.1% test accuracy. IMP with rewinding to
initialization gives subnetworks below dense accuracy at the pruned densities;
rewound to step 500 or later, the IMP subnetworks are stable to SGD noise and
matching (the dense network becomes stable later, from about step 2,000); the
preset's k = 2,000 is past both. ``:warmup`` with learning rate 0.03 also finds matching
subnetworks, at the cost of a lower-accuracy dense network.

Needs CIFAR-10 through TFDS; meant for an accelerator.

Ours: not run for this repository (no committed workdir), so no result of ours
is claimed. Run the command (on a GPU for CIFAR) and read the workdir's
``report.md``, which compares the arms paired by trial.
"""

import ml_collections

from lth_jax.configs import _common

_MODES = ("rewind", "warmup", "init")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = _common.choice("resnet20_cifar10", arg, _MODES, "rewind")
    c = _common.resnet20_cifar10()
    c.optimizer.learning_rate = 0.03 if mode == "warmup" else 0.1
    c.optimizer.warmup_steps = 20_000 if mode == "warmup" else 0
    c.imp.rounds = 12
    c.imp.rewind = "weights"
    c.imp.rewind_step = 2_000 if mode == "rewind" else 0
    return c
