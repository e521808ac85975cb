r"""Frankle & Carbin (2019), Conv-2/4/6 on CIFAR-10, with or without dropout.

Commands (the argument after the colon picks the network, ``,dropout`` adds
dropout)::

    lth-jax run --config preset:conv_cifar10:conv2 --workdir runs/conv2
    lth-jax run --config preset:conv_cifar10:conv4 --workdir runs/conv4
    lth-jax run --config preset:conv_cifar10:conv6 --workdir runs/conv6
    lth-jax run --config preset:conv_cifar10:conv6,dropout --workdir runs/conv6d

Setup (Frankle & Carbin 2019, Figure 2 and Section 3): the VGG-like Conv-2,
Conv-4 and Conv-6 (3x3 convs 64-64[-128-128[-256-256]] with max-pooling, then
FC 256-256-10; Gaussian Glorot init), no data augmentation, batch 60, Adam
2e-4 (Conv-2) / 3e-4 (Conv-4, Conv-6) for 20,000 / 25,000 / 30,000 iterations,
5,000 training images held out for validation. Layerwise magnitude pruning per
round: convolutions 10% (Conv-2, Conv-4) or 15% (Conv-6), hidden FC layers
20%, output layer 10%; rewinding to the initialization; 15 rounds (FC layers
down to 0.8^15 = 3.5%); 5 trials.

With ``,dropout``: dropout 0.5 after each hidden FC activation (the paper
gives the rate, not the placement; ``lth_jax.models.conv``), 3x the
iterations (60,000 / 75,000 / 90,000) and the learning rates the paper uses
with dropout, 3e-4 (Conv-2) / 2e-4 (Conv-4, Conv-6) (the caption of its
dropout figure); everything else unchanged.

Published result (Frankle & Carbin 2019, Figures 5 and 6): winning tickets
train faster and reach higher test accuracy than the dense networks over a
wide range of sparsities. Reinitialized subnetworks train increasingly slower
and lose accuracy sooner than the tickets, although for Conv-2 and Conv-4
their accuracy first holds or even rises at moderate pruning (Section 3,
Question 2). With dropout the dense accuracy rises by about 2.1 / 3.0 / 2.4 points
(Conv-2/4/6), and pruning adds up to 2.3 / 4.6 / 4.7 more: dropout and
iterative pruning are complementary.

Evaluation every 500 iterations (the paper evaluates every 100; set
``--config.train.eval_every=100`` for its early-stop resolution). Needs
CIFAR-10 through TFDS (see ``lth_jax.data``).

Ours: not run for this repository (no committed workdir), so no result of ours
is claimed. Run the command (on a GPU for CIFAR) and read the workdir's
``report.md``, which compares the arms paired by trial.
"""

import ml_collections

from lth_jax.config import base_config

_NETS = {
    # name: (learning rate, with dropout, iterations, conv prune rate)
    "conv2": (2e-4, 3e-4, 20_000, 0.10),
    "conv4": (3e-4, 2e-4, 25_000, 0.10),
    "conv6": (3e-4, 2e-4, 30_000, 0.15),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    parts = [p.strip() for p in (arg or "conv2").split(",") if p.strip()]
    name, flags = parts[0], set(parts[1:])
    if name not in _NETS or not flags <= {"dropout"}:
        raise ValueError(
            f"conv_cifar10.py takes conv2|conv4|conv6, optionally ',dropout'; got {arg!r}"
        )
    lr, lr_dropout, steps, conv_rate = _NETS[name]
    dropout = "dropout" in flags

    c = base_config()
    c.num_trials = 5
    c.dataset.name = "cifar10"
    c.model.name = name
    if dropout:
        c.model.kwargs.dropout = 0.5
        steps *= 3
        lr = lr_dropout
    c.train.steps = steps
    c.train.batch_size = 60
    c.train.eval_every = 500
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = lr
    c.imp.rounds = 15
    c.imp.prune_rate = 0.2  # hidden FC layers (Dense_0, Dense_1)
    c.imp.scope = "layerwise"
    c.imp.layer_rates = (("Conv_", conv_rate), ("head", 0.1))
    c.imp.rewind = "weights"
    c.imp.rewind_step = 0
    return c
