r"""Pruning methods compared on MNIST-1D at the ticket's densities: IMP vs one-shot, GMP and pruning at init.

Command (about 10 minutes on 2 CPU cores; no download)::

    lth-jax run --config preset:mnist1d_methods --workdir runs/mnist1d_methods

Setup: the experiment of ``mnist1d_lottery.py`` (MLP 40-100-100-10, Adam 1e-3,
batch 100, 3,000 steps, layerwise pruning of 20% per round and 10% of the
output layer, rewinding to initialization, 16 rounds, 5 trials, early stopping
on validation accuracy), with every arm below at the ticket's per-layer
densities of each round, in the same compiled program:

* ``ticket``: iterative magnitude pruning (IMP), rewound to initialization;
* ``one_shot``: the trained dense network magnitude-pruned at once to the
  round's densities, rewound to initialization (Frankle & Carbin 2019);
* ``gmp``: gradual magnitude pruning during one training run from
  initialization, cubic schedule (Zhu & Gupta 2017);
* ``snip``, ``grasp``, ``synflow``: pruning at initialization (Lee et al.
  2019; Wang et al. 2020; Tanaka et al. 2020), per layer at the ticket's
  counts (``pai.scope = "layerwise"``);
* ``snip_shuffled``, ``grasp_shuffled``, ``synflow_shuffled``: each method's
  mask shuffled at random within each layer, the sanity check of Frankle et al.
  2021 ("Pruning Neural Networks at Initialization: Why are We Missing the
  Mark?").

Published findings this tests (final test accuracy in each paper): magnitude
pruning after training (IMP, one-shot) beats pruning at initialization at
moderate and high sparsity, and pruning-at-initialization methods do no
better than their layerwise shuffles (Frankle et al. 2021); SynFlow beats SNIP
and GraSP at extreme sparsity (Tanaka et al. 2020), compared here only in
part: there the methods prune globally, where SNIP and GraSP can collapse
whole layers, while here every method keeps each layer's ticket count (``pai.scope
= "layerwise"``), so no layer can collapse, at far lower sparsity than theirs.
Each ``_shuffled`` arm is then a random mask at the ticket's per-layer counts:
the three are draws of the same control, with their own keys. GraSP divides
the logits by 200 (``pai.grasp_temperature``), as its authors' code does.

Ours (paired by trial; generated from experiments/results/mnist1d_methods/):

<!-- generated from experiments/results/mnist1d_methods: begin -->
- ticket vs one-shot pruning, final test accuracy: ticket above one-shot pruning in 5/5 trials at
  42.6% and from 18.5% to 3.9% of the weights (mean paired difference +1.1 to +13.1 points); no
  clear difference elsewhere.
- ticket vs gradual magnitude pruning, final test accuracy: ticket above gradual magnitude pruning
  in 5/5 trials from 65.1% to 42.6%, at 28% and at 3.9% of the weights (mean paired difference +2.2
  to +2.8 points); no clear difference elsewhere.
- ticket vs SNIP, final test accuracy: ticket above SNIP in 5/5 trials from 65.1% to 3.9% of the
  weights (mean paired difference +2.2 to +14.0 points); no clear difference elsewhere.
- ticket vs GraSP, final test accuracy: ticket above GraSP in 5/5 trials from 80.7% to 3.9% of the
  weights (mean paired difference +3.5 to +12.4 points).
- ticket vs SynFlow, final test accuracy: ticket above SynFlow in 5/5 trials from 80.7% to 3.9% of
  the weights (mean paired difference +1.1 to +9.7 points).
- ticket vs SNIP, shuffled, final test accuracy: ticket above SNIP, shuffled in 5/5 trials from
  65.1% to 3.9% of the weights (mean paired difference +2.9 to +17.6 points); no clear difference
  elsewhere.
- ticket vs GraSP, shuffled, final test accuracy: ticket above GraSP, shuffled in 5/5 trials from
  80.7% to 3.9% of the weights (mean paired difference +2.2 to +16.1 points).
- ticket vs SynFlow, shuffled, final test accuracy: ticket above SynFlow, shuffled in 4/5 or more
  trials at 80.7% and from 52.6% to 3.9% of the weights (mean paired difference +1.3 to +17.2
  points); no clear difference elsewhere.
- SNIP, shuffled vs SNIP, final test accuracy: SNIP above SNIP, shuffled in 5/5 trials from 42.6% to
  34.5%, from 22.8% to 15.1%, at 10.1% and from 6.8% to 3.9% of the weights (mean paired difference
  +0.9 to +4.2 points); no clear difference elsewhere.
- GraSP, shuffled vs GraSP, final test accuracy: GraSP, shuffled above GraSP in 5/5 trials from
  80.7% to 52.6% and at 28% of the weights (mean paired difference +1.3 to +5.9 points); GraSP above
  GraSP, shuffled in 4/5 or more trials from 5.6% to 3.9% of the weights (mean paired difference
  +3.5 to +5.7 points); no clear difference elsewhere.
- SynFlow, shuffled vs SynFlow, final test accuracy: SynFlow above SynFlow, shuffled in 5/5 trials
  from 18.5% to 15.1% and from 6.8% to 3.9% of the weights (mean paired difference +1.9 to +9.5
  points); no clear difference elsewhere.
- SynFlow vs SNIP, final test accuracy: SNIP above SynFlow in 4/5 or more trials from 42.6% to 34.5%
  and at 15.1% of the weights (mean paired difference +0.9 to +2.4 points); SynFlow above SNIP in
  5/5 trials at 6.8% and from 4.7% to 3.9% of the weights (mean paired difference +2.4 to +6.3
  points); no clear difference elsewhere.
- SynFlow vs GraSP, final test accuracy: SynFlow above GraSP in 5/5 trials from 80.7% to 52.6%, from
  34.5% to 22.8%, from 15.1% to 10.1% and from 6.8% to 3.9% of the weights (mean paired difference
  +1.6 to +5.7 points); no clear difference elsewhere.
- ticket vs dense, final test accuracy: ticket above dense in 5/5 trials at 52.6% of the weights
  (mean paired difference +1.5 points); dense above ticket in 5/5 trials from 10.1% to 3.9% of the
  weights (mean paired difference +3.9 to +14.7 points); no clear difference elsewhere.
- one-shot pruning vs dense, final test accuracy: dense above one-shot pruning in 5/5 trials from
  15.1% to 3.9% of the weights (mean paired difference +5.1 to +27.8 points); no clear difference
  elsewhere.
- gradual magnitude pruning vs dense, final test accuracy: dense above gradual magnitude pruning in
  5/5 trials at 65.1% and from 15.1% to 3.9% of the weights (mean paired difference +1.6 to +17.0
  points); no clear difference elsewhere.
- SNIP vs dense, final test accuracy: dense above SNIP in 5/5 trials from 34.5% to 3.9% of the
  weights (mean paired difference +3.2 to +28.7 points); no clear difference elsewhere.
- GraSP vs dense, final test accuracy: dense above GraSP in 5/5 trials from 80.7% to 3.9% of the
  weights (mean paired difference +2.9 to +26.4 points).
- SynFlow vs dense, final test accuracy: dense above SynFlow in 5/5 trials from 42.6% to 3.9% of the
  weights (mean paired difference +4.5 to +22.4 points); no clear difference elsewhere.
- SNIP, shuffled vs dense, final test accuracy: dense above SNIP, shuffled in 5/5 trials from 42.6%
  to 3.9% of the weights (mean paired difference +3.5 to +32.3 points); no clear difference
  elsewhere.
- GraSP, shuffled vs dense, final test accuracy: dense above GraSP, shuffled in 5/5 trials from
  52.6% to 3.9% of the weights (mean paired difference +2.7 to +30.7 points); no clear difference
  elsewhere.
- SynFlow, shuffled vs dense, final test accuracy: dense above SynFlow, shuffled in 4/5 or more
  trials from 52.6% to 3.9% of the weights (mean paired difference +2.8 to +31.9 points); no clear
  difference elsewhere.
- ticket vs one-shot pruning, test accuracy at early stop: ticket above one-shot pruning in 5/5
  trials from 18.5% to 3.9% of the weights (mean paired difference +3.8 to +12.4 points); no clear
  difference elsewhere.
- ticket vs gradual magnitude pruning, test accuracy at early stop: ticket above gradual magnitude
  pruning in 4/5 or more trials from 65.1% to 52.6% and at 34.5% of the weights (mean paired
  difference +1.0 to +2.7 points); gradual magnitude pruning above ticket in 5/5 trials from 4.7% to
  3.9% of the weights (mean paired difference +2.4 to +3.8 points); no clear difference elsewhere.
- ticket vs SNIP, test accuracy at early stop: ticket above SNIP in 4/5 or more trials from 52.6% to
  3.9% of the weights (mean paired difference +2.2 to +13.9 points); no clear difference elsewhere.
- ticket vs GraSP, test accuracy at early stop: ticket above GraSP in 5/5 trials from 65.1% to 3.9%
  of the weights (mean paired difference +7.7 to +12.5 points); no clear difference elsewhere.
- ticket vs SynFlow, test accuracy at early stop: ticket above SynFlow in 5/5 trials at 65.1% and
  from 42.6% to 3.9% of the weights (mean paired difference +2.5 to +9.6 points); no clear
  difference elsewhere.
- ticket vs SNIP, shuffled, test accuracy at early stop: ticket above SNIP, shuffled in 4/5 or more
  trials from 65.1% to 3.9% of the weights (mean paired difference +2.7 to +17.2 points); no clear
  difference elsewhere.
- ticket vs GraSP, shuffled, test accuracy at early stop: ticket above GraSP, shuffled in 5/5 trials
  from 65.1% to 3.9% of the weights (mean paired difference +2.9 to +16.0 points); no clear
  difference elsewhere.
- ticket vs SynFlow, shuffled, test accuracy at early stop: ticket above SynFlow, shuffled in 4/5 or
  more trials from 65.1% to 3.9% of the weights (mean paired difference +1.7 to +17.1 points); no
  clear difference elsewhere.
- SNIP, shuffled vs SNIP, test accuracy at early stop: SNIP above SNIP, shuffled in 4/5 or more
  trials at 34.5%, from 22.8% to 15.1%, at 10.1% and from 4.7% to 3.9% of the weights (mean paired
  difference +2.4 to +4.3 points); no clear difference elsewhere.
- GraSP, shuffled vs GraSP, test accuracy at early stop: GraSP, shuffled above GraSP in 5/5 trials
  from 65.1% to 52.6% of the weights (mean paired difference +4.6 to +5.6 points); GraSP above
  GraSP, shuffled in 5/5 trials from 4.7% to 3.9% of the weights (mean paired difference +4.7 to
  +5.1 points); no clear difference elsewhere.
- SynFlow, shuffled vs SynFlow, test accuracy at early stop: SynFlow above SynFlow, shuffled in 5/5
  trials at 18.5% and from 6.8% to 3.9% of the weights (mean paired difference +2.7 to +9.4 points);
  no clear difference elsewhere.
- SynFlow vs SNIP, test accuracy at early stop: SNIP above SynFlow in 5/5 trials at 34.5% of the
  weights (mean paired difference +2.4 points); SynFlow above SNIP in 5/5 trials from 4.7% to 3.9%
  of the weights (mean paired difference +5.3 to +6.2 points); no clear difference elsewhere.
- SynFlow vs GraSP, test accuracy at early stop: SynFlow above GraSP in 4/5 or more trials from
  65.1% to 52.6%, from 34.5% to 22.8%, at 15.1%, at 10.1% and from 5.6% to 3.9% of the weights (mean
  paired difference +2.8 to +6.0 points); no clear difference elsewhere.
- ticket vs dense, test accuracy at early stop: dense above ticket in 5/5 trials from 10.1% to 3.9%
  of the weights (mean paired difference +4.4 to +15.8 points); no clear difference elsewhere.
- one-shot pruning vs dense, test accuracy at early stop: dense above one-shot pruning in 5/5 trials
  from 15.1% to 3.9% of the weights (mean paired difference +5.8 to +28.2 points); no clear
  difference elsewhere.
- gradual magnitude pruning vs dense, test accuracy at early stop: dense above gradual magnitude
  pruning in 4/5 or more trials from 80.7% to 65.1%, from 34.5% to 28% and from 15.1% to 3.9% of the
  weights (mean paired difference +1.0 to +12.0 points); no clear difference elsewhere.
- SNIP vs dense, test accuracy at early stop: dense above SNIP in 5/5 trials from 42.6% to 3.9% of
  the weights (mean paired difference +3.7 to +29.7 points); no clear difference elsewhere.
- GraSP vs dense, test accuracy at early stop: dense above GraSP in 5/5 trials from 65.1% to 3.9% of
  the weights (mean paired difference +7.7 to +27.1 points); no clear difference elsewhere.
- SynFlow vs dense, test accuracy at early stop: dense above SynFlow in 5/5 trials from 42.6% to
  3.9% of the weights (mean paired difference +5.0 to +23.5 points); no clear difference elsewhere.
- SNIP, shuffled vs dense, test accuracy at early stop: dense above SNIP, shuffled in 5/5 trials at
  65.1% and from 42.6% to 3.9% of the weights (mean paired difference +2.4 to +33.0 points); no
  clear difference elsewhere.
- GraSP, shuffled vs dense, test accuracy at early stop: dense above GraSP, shuffled in 5/5 trials
  from 65.1% to 3.9% of the weights (mean paired difference +2.5 to +31.7 points); no clear
  difference elsewhere.
- SynFlow, shuffled vs dense, test accuracy at early stop: dense above SynFlow, shuffled in 4/5 or
  more trials from 52.6% to 3.9% of the weights (mean paired difference +3.5 to +32.9 points); no
  clear difference elsewhere.
- agrees: Frankle et al. 2021, Pruning Neural Networks at Initialization: Why are We Missing the
  Mark? (final test accuracy): magnitude pruning after training (IMP) beats pruning at
  initialization (SNIP) at moderate and high sparsity. Ours (final test accuracy, at 50% of the
  weights or fewer): the ticket above SNIP from 42.6% to 3.9% of the weights.
- agrees: Frankle et al. 2021, Pruning Neural Networks at Initialization: Why are We Missing the
  Mark? (final test accuracy): magnitude pruning after training (IMP) beats pruning at
  initialization (GraSP) at moderate and high sparsity. Ours (final test accuracy, at 50% of the
  weights or fewer): the ticket above GraSP from 42.6% to 3.9% of the weights.
- agrees: Frankle et al. 2021, Pruning Neural Networks at Initialization: Why are We Missing the
  Mark? (final test accuracy): magnitude pruning after training (IMP) beats pruning at
  initialization (SynFlow) at moderate and high sparsity. Ours (final test accuracy, at 50% of the
  weights or fewer): the ticket above SynFlow from 42.6% to 3.9% of the weights.
- disagrees: Frankle et al. 2021, Pruning Neural Networks at Initialization: Why are We Missing the
  Mark? (final test accuracy): SNIP's mask does no better than the same mask shuffled within each
  layer (only the per-layer densities matter). Ours (final test accuracy): SNIP above SNIP, shuffled
  from 42.6% to 34.5%, from 22.8% to 15.1%, at 10.1% and from 6.8% to 3.9% of the weights; no clear
  difference at the other rounds in scope.
- disagrees: Frankle et al. 2021, Pruning Neural Networks at Initialization: Why are We Missing the
  Mark? (final test accuracy): GraSP's mask does no better than the same mask shuffled within each
  layer (only the per-layer densities matter). Ours (final test accuracy): GraSP, shuffled above
  GraSP from 80.7% to 52.6% and at 28% of the weights; GraSP above GraSP, shuffled from 5.6% to 3.9%
  of the weights; no clear difference at the other rounds in scope.
- disagrees: Frankle et al. 2021, Pruning Neural Networks at Initialization: Why are We Missing the
  Mark? (final test accuracy): SynFlow's mask does no better than the same mask shuffled within each
  layer (only the per-layer densities matter). Ours (final test accuracy): SynFlow above SynFlow,
  shuffled from 18.5% to 15.1% and from 6.8% to 3.9% of the weights; no clear difference at the
  other rounds in scope.
- agrees: Tanaka et al. 2020, Pruning neural networks without any data by iteratively conserving
  synaptic flow (final test accuracy): SynFlow beats SNIP at extreme sparsity (there: global
  pruning, where SNIP can collapse whole layers; here every method keeps each layer's ticket count,
  pai.scope=layerwise, so no layer can collapse, and the sparsest round is far less sparse: only the
  choice of weights within each layer is compared). Ours (final test accuracy, at 5% of the weights
  or fewer): SynFlow above SNIP from 4.7% to 3.9% of the weights.
- agrees: Tanaka et al. 2020, Pruning neural networks without any data by iteratively conserving
  synaptic flow (final test accuracy): SynFlow beats GraSP at extreme sparsity (there: global
  pruning, where GraSP can collapse whole layers; here every method keeps each layer's ticket count,
  pai.scope=layerwise, so no layer can collapse, and the sparsest round is far less sparse: only the
  choice of weights within each layer is compared). Ours (final test accuracy, at 5% of the weights
  or fewer): SynFlow above GraSP from 4.7% to 3.9% of the weights.
<!-- generated from experiments/results/mnist1d_methods: end -->
"""

import ml_collections

from lth_jax.configs import mnist1d_lottery

ARMS = (
    "ticket",
    "one_shot",
    "gmp",
    "snip",
    "grasp",
    "synflow",
    "snip_shuffled",
    "grasp_shuffled",
    "synflow_shuffled",
)


def get_config() -> ml_collections.ConfigDict:
    c = mnist1d_lottery.get_config()
    c.arms = ARMS
    return c
