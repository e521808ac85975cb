r"""Frankle & Carbin (2019), LeNet-300-100 on MNIST: iterative pruning, rewind to init.

Command::

    lth-jax run --config preset:lenet300_100_mnist --workdir runs/lenet

Setup (Frankle & Carbin 2019, Figure 2 and Section 2): LeNet-300-100
(784-300-100-10, ReLU, Gaussian Glorot init, zero biases), Adam 1.2e-3, batch
60, 50,000 iterations, 5,000 training images held out for validation (early
stopping = iteration of minimum validation loss), layerwise magnitude pruning
of 20% of each hidden layer and 10% of the output layer per round, rewinding
to the initialization. 18 rounds take the hidden layers to 0.8^18 = 1.8% of
their weights; 5 trials. Controls: ``reinit`` (same mask, fresh init) and
``random_mask`` (random mask with the ticket's per-layer counts, the ticket's
init).

Published result (Frankle & Carbin 2019, Section 2, Figures 3-4): dense test
accuracy about 98%. Winning tickets learn faster as the weights go from 100%
to 21%, where early stopping comes 38% earlier than for the dense network;
their test accuracy rises by more than 0.3 points at 13.5% and returns to the
dense level at 3.6%. At 21% a winning ticket reaches minimum validation loss
2.51x faster than the same mask re-initialized, and is half a point more
accurate than it; re-initialized subnetworks drop below the dense accuracy
from about 21%, winning tickets only at 2.9%.

Evaluation every 250 iterations (the paper evaluates every 100; set
``--config.train.eval_every=100`` for its early-stop resolution). Needs MNIST
through TFDS (see ``lth_jax.data``).

Ours: not run for this repository (no committed workdir), so no result of ours
is claimed. Run the command (on a GPU for CIFAR) and read the workdir's
``report.md``, which compares the arms paired by trial.
"""

import ml_collections

from lth_jax.config import base_config


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.num_trials = 5
    c.dataset.name = "mnist"
    c.model.name = "lenet300_100"
    c.train.steps = 50_000
    c.train.batch_size = 60
    c.train.eval_every = 250
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1.2e-3
    c.imp.rounds = 18
    c.imp.prune_rate = 0.2
    c.imp.scope = "layerwise"
    c.imp.layer_rates = (("head", 0.1),)
    c.imp.rewind = "weights"
    c.imp.rewind_step = 0
    return c
