r"""Lottery tickets on MNIST-1D (Greydanus 2020): IMP on a wide MLP, ticket vs controls.

Command (24 minutes on 2 shared CPU cores; no download)::

    lth-jax run --config experiments/configs/mnist1d_lottery.py --workdir runs/mnist1d_lottery

Setup, following the MNIST-1D authors' lottery notebook
(``notebooks/5. lottery_tickets.ipynb`` in greydanus/mnist1d: MLP with 500
hidden units, Adam 2e-2, batch 100, 1,500 steps, no weight decay, layerwise
magnitude pruning of every layer at the same rate, rewinding to
initialization): MLP 40-500-500-10 (ReLU, Gaussian Glorot init), Adam 2e-2
constant, batch 100, 1,500 steps (43 epochs of the 3,500 training signals left
after 500 are held out for validation), layerwise pruning of 20% per round of
*every* kernel, the output layer ``head`` included, 18 rounds (down to 0.8^18
= 1.8% of the weights), 5 trials, arms ``ticket``, ``reinit`` and
``random_mask``.

Differences from the notebook, kept on purpose or unavoidable: its MLP has a
residual connection around the second layer and prunes the biases too (ours:
plain MLP, kernels only); it prunes in 1% steps (100 retrainings) where we
prune 20% per round; it trains on all 4,000 signals with no validation split.

Published result (MNIST-1D paper and notebook): dense MLP about 62-66% test
accuracy; tickets about 72-75% at 80-93% sparsity; random pruning falls below
the dense accuracy past about 90% sparsity.

Our result (``experiments/results/mnist1d_lottery/``, final test accuracy,
mean ± sample std over 5 trials): dense 62.8 ± 1.5%; tickets above dense at
every density from 80% down to 1.8% (70.6-72.5% between 21% and 8.6% of the
weights, 69.7 ± 1.5% at 6.9%, 68.4 ± 1.9% at 5.5%); the random mask below the
ticket from 8.6% of the weights down (63.9 ± 1.5% at 6.9%, below dense from
5.5%, 29.3% at 1.8%); random re-initialization with the ticket's mask as good
as the ticket down to about 10% and below it from 6.9%.
"""

import ml_collections

from lth_jax.config import base_config


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.num_trials = 5
    c.dataset.name = "mnist1d"
    c.model.name = "mlp"
    c.model.kwargs.features = (500, 500)
    c.train.steps = 1500
    c.train.batch_size = 100
    c.train.eval_every = 100
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 2e-2
    c.imp.rounds = 18
    c.imp.prune_rate = 0.2
    c.imp.scope = "layerwise"
    c.imp.layer_rates = ()  # every layer at 20%, head included
    c.imp.rewind = "weights"
    c.imp.rewind_step = 0
    return c
