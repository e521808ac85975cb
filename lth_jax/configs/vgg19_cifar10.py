r"""VGG-19 on CIFAR-10: IMP needs learning-rate warmup or rewinding to an early step k.

Commands (the argument picks how the ticket is made trainable)::

    # rewinding to an early step (Frankle et al. 2020, on VGG-16): no warmup, k = 2,000
    lth-jax run --config preset:vgg19_cifar10:rewind --workdir runs/vgg19_k2000
    # Frankle & Carbin (2019): linear warmup to 0.1 over 10,000 steps, rewind to init
    lth-jax run --config preset:vgg19_cifar10:warmup --workdir runs/vgg19_warmup
    # the failing baseline: no warmup, rewind to init
    lth-jax run --config preset:vgg19_cifar10:init --workdir runs/vgg19_init

Setup (Frankle & Carbin 2019, Figure 2 and Section 4; open_lth's
``cifar_vgg``): VGG-19 with batch norm (``vgg19_bn``, He-normal init), random
crop and flip augmentation, SGD with momentum 0.9, batch 64, learning rate
0.1 divided by 10 at 50% and 75% of training, 112,000 iterations (about 160
epochs of the 45,000 training images left after 5,000 are held out for
validation), coupled L2 1e-4. Global magnitude pruning of 20% of the
convolution weights per round (the output layer ``head`` is not pruned, as in
open_lth's ``pruning_layers_to_ignore='fc.weight'``); 18 rounds (down to 1.8%
of the convolution weights); 3 trials. Where Frankle & Carbin's Appendix I.2
differs: Gaussian Glorot init (here He-normal, open_lth's), 112,480 iterations
(160 epochs; here 112,000, a multiple of the evaluation interval).

Published result (Frankle & Carbin 2019, Figure 7; Frankle et al. 2020,
"Linear Mode Connectivity and the Lottery Ticket Hypothesis"): dense VGG-19
reaches about 93% test accuracy. At learning rate 0.1 without warmup, IMP
with rewinding to initialization finds no winning tickets (``:init`` falls
below the dense accuracy and is no better than random reinitialization after a
few rounds); with warmup (``:warmup``) or with rewinding to an early step k
(``:rewind``) the tickets match the dense accuracy down to a few percent of
the weights. Frankle et al. (2020) study rewinding on VGG-16, not VGG-19 (its
IMP subnetworks are stable from about step 1,000); the rewind step here
(2,000, about 3 epochs) is an untuned choice past that point.

Needs CIFAR-10 through TFDS; about 20M parameters: meant for an accelerator.

Ours: not run for this repository (no committed workdir), so no result of ours
is claimed. Run the command (on a GPU for CIFAR) and read the workdir's
``report.md``, which compares the arms paired by trial.
"""

import ml_collections

from lth_jax.config import base_config
from lth_jax.configs import _common

_MODES = ("rewind", "warmup", "init")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = _common.choice("vgg19_cifar10", arg, _MODES, "rewind")
    c = base_config()
    c.num_trials = 3
    c.dataset.name = "cifar10"
    c.dataset.augment = True
    c.model.name = "vgg19_bn"
    c.train.steps = 112_000
    c.train.batch_size = 64
    c.train.eval_every = 1_000
    c.optimizer.name = "momentum"
    c.optimizer.momentum = 0.9
    c.optimizer.learning_rate = 0.1
    c.optimizer.schedule = "step"
    c.optimizer.step_boundaries = (0.5, 0.75)
    c.optimizer.step_factor = 0.1
    c.optimizer.l2 = 1e-4
    c.optimizer.warmup_steps = 10_000 if mode == "warmup" else 0
    c.imp.rounds = 18
    c.imp.prune_rate = 0.2
    c.imp.scope = "global"
    c.imp.layer_rates = (("head", 0.0),)
    c.imp.rewind = "weights"
    c.imp.rewind_step = 2_000 if mode == "rewind" else 0
    return c
