r"""Instability analysis on MNIST-1D: are the IMP subnetworks of the MLP linearly connected?

Commands (the argument is the rewind step k; default 0, rewinding to init)::

    lth-jax run --config experiments/configs/mnist1d_instability.py --workdir runs/m1d_inst_k0
    lth-jax run --config experiments/configs/mnist1d_instability.py:500 --workdir runs/m1d_inst_k500

What it does (``config.kind = "instability"``, see ``lth_jax.instability``):
the IMP run of ``mnist1d_lottery.py`` (ticket arm only, 3 trials, 12 rounds,
down to 0.8^12 = 6.9% of the weights); then for every round (round 0 = the
dense network) two copies of the round's subnetwork are trained from step k
with different data orders and the test-error barrier along their linear
interpolation (11 points) is recorded. 9 minutes (k = 0) or 6 (k = 500) on 2
CPU cores.

Published result (Frankle et al. 2020, "Linear Mode Connectivity and the
Lottery Ticket Hypothesis", Figures 2-3): small networks such as LeNet-300-100
on MNIST are stable to SGD noise already at initialization (barrier about 0
for k = 0), and their IMP subnetworks rewound to initialization are stable and
matching; deeper CIFAR networks are unstable at k = 0 and become stable after
a few percent of training. MNIST-1D was not in the paper.

Our result (``experiments/results/mnist1d_instability/``, 3 trials): at k = 0
the dense MLP is far from stable (barrier 38 points) and its IMP subnetworks,
although more accurate than the dense network, stay unstable (barriers 11-17
points down to 6.9% of the weights); at k = 500 every network is stable
(barriers 0.5-1.7 points) and the tickets still beat the dense accuracy.
"""

import ml_collections

from lth_jax.config import base_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    try:
        k = int(arg) if arg else 0
    except ValueError:
        raise ValueError(f"mnist1d_instability.py takes the rewind step k; got {arg!r}") from None
    if k < 0 or k % 100:
        raise ValueError(f"mnist1d_instability.py takes k, a multiple of 100; got {arg!r}")
    c = base_config()
    c.kind = "instability"
    c.num_trials = 3
    c.arms = ("ticket",)
    c.dataset.name = "mnist1d"
    c.model.name = "mlp"
    c.model.kwargs.features = (500, 500)
    c.train.steps = 1500
    c.train.batch_size = 100
    c.train.eval_every = 100
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 2e-2
    c.imp.rounds = 12
    c.imp.prune_rate = 0.2
    c.imp.scope = "layerwise"
    c.imp.layer_rates = ()
    c.imp.rewind = "weights"
    c.imp.rewind_step = k
    c.instability.num_points = 11
    return c
