r"""Instability analysis of IMP subnetworks, ResNet-20 on CIFAR-10 (Frankle et al. 2020).

Commands (the argument is the rewind step k)::

    lth-jax run --config preset:resnet20_instability:0 --workdir runs/inst_k0
    lth-jax run --config preset:resnet20_instability:500 --workdir runs/inst_k500
    lth-jax run --config preset:resnet20_instability:2000 --workdir runs/inst_k2000
    lth-jax report runs/inst_k0 runs/inst_k500 runs/inst_k2000 --out runs/inst

What it does (``config.kind = "instability"``, see ``lth_jax.instability``): IMP
as in ``resnet20_cifar10.py`` (global 20% per round, rewinding the weights to
step k), ticket arm only, 8 rounds (down to 0.8^8 = 16.8% of the weights), 3
trials; then for every round (round 0 = the dense network) two copies of the
round's subnetwork are trained from step k with different data orders, and
the test-error barrier along their linear interpolation (11 points; the paper
uses 30 and 9 samples, 3 initializations x 3, per point:
``--config.instability.num_points=30``) is recorded. Every network on the
path is evaluated with its batch-norm statistics recomputed on the training set (``instability.batch_norm =
"recompute"``; interpolating them with the weights inflates the barrier). The
report adds a barrier column and panel.

Published result (Frankle et al. 2020, "Linear Mode Connectivity and the
Lottery Ticket Hypothesis", Sections 3-4): rewinding to k = 0, the IMP
subnetworks of ResNet-20 are unstable (barriers of several percentage points,
far above the paper's 2% threshold) and do not reach the dense accuracy;
rewound to step 500 or later they are stable (barrier near 0) and matching.
The dense network becomes stable later, from about step 2,000 (about 3% of
training): the IMP subnetworks become stable sooner than the dense network.
A ``k`` (a multiple of 100) that is not a multiple of 1,000 evaluates every
``gcd(k, 1000)`` steps, since a rewind step must fall on an evaluation: k = 500
evaluates twice as often as k = 0 or 2,000, k = 100 ten times as often.

Needs CIFAR-10 through TFDS; meant for an accelerator.

Ours: not run for this repository (no committed workdir), so no result of ours
is claimed. Run the command (on a GPU for CIFAR) and read the workdir's
``report.md``, which compares the arms paired by trial.
"""

import math

import ml_collections

from lth_jax.configs import _common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    try:
        k = int(arg) if arg else 2000
    except ValueError:
        raise ValueError(f"resnet20_instability.py takes the rewind step k; got {arg!r}") from None
    if k < 0 or k % 100:
        raise ValueError(f"resnet20_instability.py takes k, a multiple of 100; got {arg!r}")
    c = _common.resnet20_cifar10()
    c.train.eval_every = math.gcd(k, c.train.eval_every)  # k = 0: the default, 1,000
    c.kind = "instability"
    c.arms = ("ticket",)
    c.imp.rounds = 8
    c.imp.rewind = "weights"
    c.imp.rewind_step = k
    c.instability.num_points = 11
    c.instability.batch_norm = "recompute"
    return c
