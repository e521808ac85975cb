r"""Lottery tickets on MNIST-1D at a standard learning rate: IMP on a small MLP, ticket vs controls.

Command (about 10 minutes on 2 CPU cores; no download)::

    lth-jax run --config preset:mnist1d_lottery --workdir runs/mnist1d_lottery

Setup: the built-in default experiment (``lth_jax.config.default_config``)
with 5 trials and 16 rounds, and early stopping on validation accuracy. MLP
40-100-100-10 (ReLU), Adam 1e-3 constant (the learning rate Frankle & Carbin
use for LeNet-300-100 is 1.2e-3), batch 100, 3,000 steps (86 epochs of the
3,500 training signals left after 500 are held out for validation),
layerwise pruning of 20% per round of the hidden kernels and 10% of the
output layer (Frankle & Carbin's rates), rewinding to initialization, rounds
down to 0.8^16 = 2.8% of the hidden weights, arms ``ticket``, ``reinit``
(random re-initialization, the ticket's mask) and ``random_mask`` (random
pruning, the ticket's per-layer counts, the ticket's initialization).

Early stopping: ``train.early_stop_metric = "val_accuracy"``. On MNIST-1D the
validation *loss* of these MLPs turns up long before the validation accuracy
stops improving (the networks grow over-confident), so the loss minimum marks
an early, less accurate point and says little about learning speed; the
first step of the highest validation accuracy is the one kept. Final test
accuracy is the main metric.

Published result (Frankle & Carbin 2019, "The Lottery Ticket Hypothesis",
Figures 1 and 3, LeNet-300-100 on MNIST, test accuracy at early stop): winning
tickets found by IMP and rewound to initialization learn faster and reach
higher test accuracy than the dense network down to a few percent of the
weights, while random re-initialization of the same masks falls behind the
ticket as pruning proceeds. MNIST-1D was not in the paper; its authors'
notebook runs the experiment at Adam 2e-2 (``mnist1d_lottery_notebook.py``).

Ours (paired by trial; generated from experiments/results/mnist1d_lottery/):

<!-- generated from experiments/results/mnist1d_lottery: begin -->
- ticket vs random re-init, final test accuracy: ticket above random re-init in 5/5 trials at 52.6%
  and from 34.5% to 3.9% of the weights (mean paired difference +2.7 to +10.3 points); no clear
  difference elsewhere.
- ticket vs random pruning, final test accuracy: ticket above random pruning in 5/5 trials from
  65.1% to 3.9% of the weights (mean paired difference +1.5 to +16.5 points); no clear difference
  elsewhere.
- ticket vs dense, final test accuracy: ticket above dense in 5/5 trials at 52.6% of the weights
  (mean paired difference +1.5 points); dense above ticket in 5/5 trials from 10.1% to 3.9% of the
  weights (mean paired difference +3.9 to +14.7 points); no clear difference elsewhere.
- random re-init vs dense, final test accuracy: dense above random re-init in 5/5 trials from 28% to
  3.9% of the weights (mean paired difference +4.7 to +23.3 points); no clear difference elsewhere.
- random pruning vs dense, final test accuracy: dense above random pruning in 5/5 trials from 52.6%
  to 3.9% of the weights (mean paired difference +2.6 to +31.2 points); no clear difference
  elsewhere.
- ticket vs random re-init, test accuracy at early stop: ticket above random re-init in 5/5 trials
  at 52.6% and from 34.5% to 3.9% of the weights (mean paired difference +3.2 to +10.5 points); no
  clear difference elsewhere.
- ticket vs random pruning, test accuracy at early stop: ticket above random pruning in 5/5 trials
  from 65.1% to 3.9% of the weights (mean paired difference +2.3 to +16.6 points); no clear
  difference elsewhere.
- ticket vs dense, test accuracy at early stop: dense above ticket in 5/5 trials from 10.1% to 3.9%
  of the weights (mean paired difference +4.4 to +15.8 points); no clear difference elsewhere.
- random re-init vs dense, test accuracy at early stop: dense above random re-init in 5/5 trials at
  52.6% and from 28% to 3.9% of the weights (mean paired difference +3.1 to +24.5 points); no clear
  difference elsewhere.
- random pruning vs dense, test accuracy at early stop: dense above random pruning in 5/5 trials
  from 52.6% to 3.9% of the weights (mean paired difference +3.6 to +32.4 points); no clear
  difference elsewhere.
- agrees: Frankle & Carbin 2019, Figure 4 (LeNet-300-100 on MNIST, test accuracy at early stop):
  below about 20% of the weights, random re-initialization of the ticket's mask reaches lower
  accuracy than the ticket. Ours (test accuracy at early stop, at 20% of the weights or fewer): the
  ticket above random re-init from 18.5% to 3.9% of the weights.
- agrees: Frankle & Carbin 2019, Figure 1 (LeNet-300-100 on MNIST, test accuracy at early stop; its
  random sparse networks also draw fresh weights, where random_mask keeps the ticket's
  initialization): randomly sampled sparse networks of the ticket's sizes do worse than the ticket
  as pruning proceeds. Ours (test accuracy at early stop, at 20% of the weights or fewer): the
  ticket above random pruning from 18.5% to 3.9% of the weights.
<!-- generated from experiments/results/mnist1d_lottery: end -->
"""

import ml_collections

from lth_jax.config import default_config


def get_config() -> ml_collections.ConfigDict:
    c = default_config()
    c.num_trials = 5
    c.imp.rounds = 16
    c.train.early_stop_metric = "val_accuracy"
    return c
