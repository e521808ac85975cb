"""What several presets share: their argument check, the CIFAR-10 ResNet-20 recipe, transfer arms.

Not a preset itself (``lth-jax presets`` skips modules whose name starts with ``_``).
"""

from __future__ import annotations

import ml_collections

from lth_jax.config import base_config

#: Transfer's fine-tuning arms and ticket arms, as the transfer presets run them.
FINETUNE_ARMS = (
    "scratch",
    "scratch+dropout",
    "pretrained",
    "pretrained+dropout",
    "pretrained+l2sp",
)
TICKET_ARMS = ("ticket_source", "ticket_source_reinit", "random_mask", "ticket_target")


def choice(preset: str, arg: str | None, choices: tuple[str, ...], default: str) -> str:
    """``arg`` (``default`` when none), which must be one of ``choices``.

    Raises:
      ValueError: naming the preset and what it takes.
    """
    value = (arg or default).strip()
    if value not in choices:
        raise ValueError(f"{preset}.py takes one of {'|'.join(choices)}; got {arg!r}")
    return value


def transfer_arms(setting: str) -> tuple[str, ...]:
    """The fine-tuning arms, and the ticket arms too in the ``full`` setting."""
    return FINETUNE_ARMS + (TICKET_ARMS if setting == "full" else ())


def resnet20_cifar10() -> ml_collections.ConfigDict:
    """ResNet-20 on CIFAR-10 as Frankle et al. (2020) train it, IMP global 20% per round.

    SGD with momentum 0.9, batch 128, learning rate 0.1 divided by 10 at steps
    32,000 and 48,000 of 63,000, coupled L2 1e-4, crop and flip augmentation,
    3 trials, evaluation every 1,000 steps.
    """
    c = base_config()
    c.num_trials = 3
    c.dataset.name = "cifar10"
    c.dataset.augment = True
    c.model.name = "resnet20"
    c.train.steps = 63_000
    c.train.batch_size = 128
    c.train.eval_every = 1_000
    c.optimizer.name = "momentum"
    c.optimizer.momentum = 0.9
    c.optimizer.learning_rate = 0.1
    c.optimizer.schedule = "step"
    c.optimizer.step_boundaries = (32 / 63, 48 / 63)  # steps 32,000 and 48,000
    c.optimizer.step_factor = 0.1
    c.optimizer.l2 = 1e-4
    c.imp.prune_rate = 0.2
    c.imp.scope = "global"
    return c
