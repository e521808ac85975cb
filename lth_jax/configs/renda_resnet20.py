r"""Renda et al. (2020): learning-rate rewinding vs weight rewinding vs fine-tuning.

Commands (one workdir per retraining method; compare them with ``lth-jax report``)::

    lth-jax run --config preset:renda_resnet20:lr --workdir runs/renda_lr
    lth-jax run --config preset:renda_resnet20:weights --workdir runs/renda_weights
    lth-jax run --config preset:renda_resnet20:finetune --workdir runs/renda_ft
    lth-jax run --config preset:renda_resnet20:init --workdir runs/renda_init
    lth-jax report runs/renda_lr runs/renda_weights runs/renda_ft runs/renda_init --out runs/renda

Setup: ResNet-20 on CIFAR-10 trained as in ``resnet20_cifar10.py`` (SGD
momentum 0.9, batch 128, learning rate 0.1 divided by 10 at steps 32,000 and
48,000, 63,000 steps, coupled L2 1e-4, crop and flip augmentation). After each
round, global magnitude pruning of 20% of the weights, then retraining for
the same budget, ``63,000 - k`` steps with ``k = 2,000``, by one of:

* ``weights``: rewind the weights to step ``k`` and replay the schedule from
  ``k`` (Frankle et al. 2020);
* ``lr``: keep the trained weights, replay the learning-rate schedule from
  step ``k`` (learning-rate rewinding);
* ``finetune``: keep the trained weights, train at the final learning rate
  of the original schedule, ``imp.finetune_lr = 0.001``: the authors' value
  for ResNet-20 (``--lottery_force_learning_rate 0.001`` in the README of
  their released code), and what this schedule ends at (0.1 x 0.1 x 0.1);
* ``init``: rewind the weights to initialization (``k = 0``, Frankle &
  Carbin), full 63,000 steps.

Only the ``ticket`` arm is trained (the controls are not part of this
comparison; the ``reinit`` control is not defined with ``lr`` or ``finetune``
retraining, see ``lth_jax.config_checks.check_rewind``). 10 rounds take the
network to 0.8^10 = 10.7% of its weights; 3 trials.

Published (Renda, Frankle & Carbin 2020, "Comparing Rewinding and Fine-tuning
in Neural Network Pruning"; ResNet-20 medians *computed by us* from the
authors' released data, not quoted from the paper, whose text reports larger
networks: ``vision/plot/pruned_dataframe.pkl``
and ``bases_dataframe.pkl`` in github.com/lottery-ticket/rewinding-iclr20-public,
median test accuracy over their 3 trials, network ``resnet20``, iterative
unstructured pruning, density 0.1074 (10.7% of the weights), CIFAR-10):

* retraining for 170 of their 182 epochs (the released retraining time
  closest to this preset's 61,000 of 63,000 steps): learning-rate rewinding
  (``retrain_method == "lr_finetune"``) 91.07%, weight rewinding
  (``"lottery"``) 91.00%, fine-tuning (``"finetune"``) 89.26%;
* rewinding to initialization (``"lottery"``, 182 epochs) 86.68%;
* the best over the released retraining times: learning-rate rewinding
  91.23% (130 epochs), fine-tuning 89.78% (30 epochs);
* dense ResNet-20 (``bases_dataframe.pkl``, median of its runs) 91.73%.

Their ResNet-20 was trained with their own recipe, not this preset's: 182
epochs (71,108 steps of batch 128) on all 50,000 training images, the learning
rate divided by 10 at epochs 91 and 136, L2 2e-4 in the loss on every variable,
batch norm's included (``vision/gpu-src/official/resnet/cifar10_main.py`` and
``vision/gpu-src/README.md``). Read the comparison as the same methods under
two recipes, not as a reproduction of their numbers.

Ours: not run (CIFAR-10 ResNet-20 for 10 rounds does not fit this project's
2-core CPU machine); no result of ours is claimed.
"""

import ml_collections

from lth_jax.configs import _common

_MODES = ("weights", "lr", "finetune", "init")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    mode = _common.choice("renda_resnet20", arg, _MODES, "lr")
    c = _common.resnet20_cifar10()
    c.arms = ("ticket",)
    c.imp.rounds = 10
    c.imp.rewind = "weights" if mode == "init" else mode
    c.imp.rewind_step = 0 if mode == "init" else 2_000
    if mode == "finetune":
        c.imp.finetune_lr = 0.001
    return c
