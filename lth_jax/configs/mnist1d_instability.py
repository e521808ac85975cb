r"""Instability analysis on MNIST-1D: are the IMP subnetworks of the MLP linearly connected?

Commands (the argument is the rewind step k; default 0, rewinding to init)::

    lth-jax run --config preset:mnist1d_instability --workdir runs/m1d_inst_k0
    lth-jax run --config preset:mnist1d_instability:500 --workdir runs/m1d_inst_k500

What it does (``config.kind = "instability"``, see ``lth_jax.instability``):
the IMP run of ``mnist1d_lottery.py`` (ticket arm only, 3 trials, 12 rounds,
down to 0.8^12 = 6.9% of the weights); then for every round (round 0 = the
dense network) two copies of the round's subnetwork are trained from step k
with different data orders and the test-error barrier along their linear
interpolation (11 points; Frankle et al. use 30, so a barrier between two of
ours can be missed) is recorded. 9 minutes (k = 0) or 6 (k = 500) on 2 CPU
cores.

Published result (Frankle et al. 2020, "Linear Mode Connectivity and the
Lottery Ticket Hypothesis", Sections 3-4): small networks such as LeNet-300-100
on MNIST are stable to SGD noise already at initialization (barrier about 0
for k = 0), and their IMP subnetworks rewound to initialization are stable and
matching; deeper CIFAR networks are unstable at k = 0 and become stable after
a few percent of training. MNIST-1D was not in the paper.

Ours (paired by trial; generated from experiments/results/mnist1d_instability/; ``k0`` rewinds to
initialization, ``k500`` to step 500; error barriers by the 2-point rule of Frankle et al.):

<!-- generated from experiments/results/mnist1d_instability: begin -->
experiments/results/mnist1d_instability/k0:
- error barrier, ticket (100%: dense): above the 2-point threshold from 100% to 6.9% of the weights:
  3/3 trials exceed 2 points (mean barrier 11.3 to 38.0 points).
- ticket vs dense, final test accuracy: ticket above dense in 3/3 trials at 41%, from 26.2% to 13.4%
  and at 6.9% of the weights (mean paired difference +7.0 to +8.9 points); no clear difference
  elsewhere.
- ticket vs dense, test accuracy at early stop: ticket above dense in 3/3 trials at 10.7% of the
  weights (mean paired difference +5.9 points); no clear difference elsewhere.
experiments/results/mnist1d_instability/k500:
- error barrier, ticket (100%: dense): below the 2-point threshold from 100% to 21% and from 10.7%
  to 8.6% of the weights: 3/3 trials are at most 2 points (mean barrier 0.5 to 1.3 points); no clear
  verdict from 16.8% to 13.4% and at 6.9% of the weights (mean barrier 1.1 to 1.7 points).
- ticket vs dense, final test accuracy: ticket above dense in 3/3 trials at 21% and from 13.4% to
  6.9% of the weights (mean paired difference +5.1 to +9.4 points); no clear difference elsewhere.
- ticket vs dense, test accuracy at early stop: ticket above dense in 3/3 trials at 80%, at 51.2%
  and from 32.8% to 6.9% of the weights (mean paired difference +4.5 to +12.4 points); no clear
  difference elsewhere.
<!-- generated from experiments/results/mnist1d_instability: end -->
"""

import ml_collections

from lth_jax.configs import mnist1d_lottery_notebook


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    try:
        k = int(arg) if arg else 0
    except ValueError:
        raise ValueError(f"mnist1d_instability.py takes the rewind step k; got {arg!r}") from None
    if k < 0 or k % 100:
        raise ValueError(f"mnist1d_instability.py takes k, a multiple of 100; got {arg!r}")
    c = mnist1d_lottery_notebook.recipe()
    c.kind = "instability"
    c.num_trials = 3
    c.arms = ("ticket",)
    c.imp.rounds = 12
    c.imp.rewind_step = k
    c.instability.num_points = 11
    return c
