r"""Rewinding study on MNIST-1D at the notebook's learning rate: where should a pruned network restart?

Commands (one workdir per method; 16, 7 and 7 minutes on 2 CPU cores; no download)::

    lth-jax run --config preset:mnist1d_rewinding:init --workdir runs/rewinding/init
    lth-jax run --config preset:mnist1d_rewinding:step500 --workdir runs/rewinding/step500
    lth-jax run --config preset:mnist1d_rewinding:lr --workdir runs/rewinding/lr

Setup: the MNIST-1D notebook recipe of ``mnist1d_lottery_notebook.py`` (MLP
40-500-500-10, Adam 2e-2 constant, batch 100, 1,500 steps, layerwise pruning
of 20% of every kernel per round, 18 rounds down to 1.8% of the weights, 5
trials), early stopping on validation accuracy (see ``mnist1d_lottery.py``
for why), and one way of restarting the pruned network per workdir, all at
the same per-layer densities:

* ``init``: IMP rewinding to initialization (Frankle & Carbin 2019), arm
  ``ticket``; and one-shot pruning (arm ``one_shot``: the trained dense
  network pruned at once to the ticket's per-layer densities of each round,
  rewound to initialization: Frankle & Carbin's iterative vs one-shot).
* ``step500``: IMP rewinding to step k = 500 of 1,500 (Frankle et al. 2020).
  k comes from ``experiments/results/mnist1d_instability/``: 500 is the
  smallest k measured there at which the mean error barrier of the IMP
  subnetworks is under 2 points (k = 0 is far from stable).
* ``lr``: learning-rate rewinding (Renda et al. 2020): keep the trained
  weights of the previous round and retrain them with the schedule replayed
  from step 500, the same 1,000-step retraining budget as ``step500``.
  With the notebook's *constant* learning rate, fine-tuning (Renda et al.'s
  other baseline: retrain at the schedule's last learning rate) is the same
  procedure, step for step, so it has no workdir of its own
  (``tests/test_rewinding.py`` checks that the two modes give identical
  records under a constant schedule).

Published results (Renda et al. 2020, "Comparing Rewinding and Fine-tuning in
Neural Network Pruning", CIFAR-10/ImageNet ResNets, test accuracy at the end
of retraining: learning-rate rewinding matches or beats
weight rewinding, and both beat fine-tuning, across sparsities; Frankle et al.
2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis", its
sparse IMP experiments: rewinding to an early step k finds matching subnetworks where rewinding to
initialization fails in deeper networks; Frankle & Carbin 2019, Figure 4:
iterative pruning finds tickets that stay matching at smaller sizes than
one-shot pruning). None of these papers used MNIST-1D.

Ours (paired by trial; generated from experiments/results/mnist1d_rewinding/, across its
workdirs: every method of a trial shares its initialization and data order; final test accuracy):

<!-- generated from experiments/results/mnist1d_rewinding: begin -->
- init: ticket vs init: one-shot pruning, final test accuracy: no clear difference at any round (18
  rounds).
- step500: ticket vs init: ticket, final test accuracy: init: ticket above step500: ticket in 4/5 or
  more trials from 80% to 64% and at 32.8% of the weights (mean paired difference +2.0 to +3.2
  points); step500: ticket above init: ticket in 5/5 trials from 4.4% to 1.8% of the weights (mean
  paired difference +2.3 to +4.5 points); no clear difference elsewhere.
- lr: ticket vs init: ticket, final test accuracy: init: ticket above lr: ticket in 4/5 or more
  trials at 41%, at 26.2%, from 16.8% to 13.4% and from 5.5% to 1.8% of the weights (mean paired
  difference +2.2 to +27.7 points); no clear difference elsewhere.
- lr: ticket vs step500: ticket, final test accuracy: step500: ticket above lr: ticket in 5/5 trials
  at 13.4% and from 6.9% to 1.8% of the weights (mean paired difference +3.0 to +31.6 points); no
  clear difference elsewhere.
- init: ticket vs init: dense, final test accuracy: init: ticket above init: dense in 4/5 or more
  trials at 80% and from 51.2% to 2.3% of the weights (mean paired difference +2.4 to +9.7 points);
  no clear difference elsewhere.
- init: one-shot pruning vs init: dense, final test accuracy: init: one-shot pruning above init:
  dense in 4/5 or more trials at 80% and from 51.2% to 2.8% of the weights (mean paired difference
  +3.0 to +10.0 points); init: dense above init: one-shot pruning in 5/5 trials at 1.8% of the
  weights (mean paired difference +2.5 points); no clear difference elsewhere.
- step500: ticket vs step500: dense, final test accuracy: step500: ticket above step500: dense in
  5/5 trials at 41% and from 26.2% to 1.8% of the weights (mean paired difference +4.2 to +9.5
  points); no clear difference elsewhere.
- lr: ticket vs lr: dense, final test accuracy: lr: ticket above lr: dense in 5/5 trials from 64% to
  5.5% of the weights (mean paired difference +2.1 to +6.5 points); lr: dense above lr: ticket in
  5/5 trials from 4.4% to 1.8% of the weights (mean paired difference +2.3 to +26.7 points); no
  clear difference elsewhere.
- disagrees: Frankle & Carbin 2019, Figure 4 (LeNet-300-100 on MNIST, test accuracy at early stop):
  iterative pruning keeps tickets matching at smaller sizes than one-shot pruning. Ours (test
  accuracy at early stop, at 20% of the weights or fewer): one-shot pruning above iterative pruning
  (init: ticket) at 6.9%, at 4.4% and at 2.8% of the weights; no clear difference at the other
  rounds in scope.
- partly: Frankle et al. 2020, Linear Mode Connectivity and the Lottery Ticket Hypothesis (its
  sparse IMP experiments; final test accuracy): where the network is unstable to SGD noise at
  initialization (this MLP is at k = 0, see the instability study), rewinding to an early step k
  finds sparse subnetworks that do better than rewinding to initialization. Ours (final test
  accuracy, at 20% of the weights or fewer): rewinding to step 500 above rewinding to initialization
  from 4.4% to 1.8% of the weights; no clear difference at the other rounds in scope.
- disagrees: Renda et al. 2020, Comparing Rewinding and Fine-tuning in Neural Network Pruning
  (CIFAR-10 and ImageNet ResNets, final test accuracy): learning-rate rewinding matches or beats
  weight rewinding at every sparsity. Ours (final test accuracy): weight rewinding to step 500 above
  learning-rate rewinding at 13.4% and from 6.9% to 1.8% of the weights; no clear difference at the
  other rounds in scope.
<!-- generated from experiments/results/mnist1d_rewinding: end -->
"""

import ml_collections

from lth_jax.configs import _common, mnist1d_lottery_notebook

METHODS = ("init", "step500", "lr")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    method = _common.choice("mnist1d_rewinding", arg, METHODS, "init")
    c = mnist1d_lottery_notebook.recipe()
    c.train.early_stop_metric = "val_accuracy"
    if method == "init":
        c.arms = ("ticket", "one_shot")
        c.imp.rewind, c.imp.rewind_step = "weights", 0
    elif method == "step500":
        c.arms = ("ticket",)
        c.imp.rewind, c.imp.rewind_step = "weights", 500
    else:
        c.arms = ("ticket",)
        c.imp.rewind, c.imp.rewind_step = "lr", 500
    return c
