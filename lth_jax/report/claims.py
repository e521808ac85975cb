"""Published findings set against ours: the verdict is computed, never written by hand.

Each :class:`Claim` names a results folder, a published finding (source,
figure, metric), the two runs it compares (``a`` and ``b`` as the paired rows
name them: ``"ticket"``/``"reinit"`` within a workdir, ``"<workdir>: <arm>"``
in a study), the metric of ours that matches the paper's, and what the paper
found: ``"a_above"`` (a clearly better than b) or ``"a_not_below"`` (a matches
or beats b), at every density or only at densities at most ``at_most``.

Our side comes from the paired findings rule of :mod:`lth_jax.report.findings`,
round by round over the rounds in scope:

* ``a_above``: **agrees** where a is above b at every round in scope,
  **partly** where it is at some and b is never above a, **disagrees** where
  b is above a at any round in scope, **not shown** where no round is clear;
* ``a_not_below``: **disagrees** where b is above a at any round in scope,
  otherwise **agrees**.

Each sentence says where (the density ranges) and is regenerated with the
block it belongs to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from lth_jax.report.findings import A_ABOVE, B_ABOVE, METRIC_NAMES, ranges, where_density

__all__ = ["Claim", "CLAIMS", "claims_for", "claim_lines"]


class Claim(NamedTuple):
    """A published finding: ``a`` vs ``b`` on ``metric``, ``expect`` in scope."""

    published: str
    a: str
    b: str
    a_label: str
    b_label: str
    expect: str  # "a_above" | "a_not_below"
    metric: str = "final_test_accuracy"
    at_most: float = 1.0  # the largest density in scope


_FC = "Frankle & Carbin 2019, Figure 4 (LeNet-300-100 on MNIST, test accuracy at early stop)"
_FC_RANDOM = (
    "Frankle & Carbin 2019, Figure 1 (LeNet-300-100 on MNIST, test accuracy at early stop; its "
    "random sparse networks also draw fresh weights, where random_mask keeps the ticket's "
    "initialization)"
)

#: The claims of each results folder (its name under ``experiments/results/``).
CLAIMS: dict[str, tuple[Claim, ...]] = {
    "mnist1d_lottery": (
        Claim(
            f"{_FC}: below about 20% of the weights, random re-initialization of the "
            "ticket's mask reaches lower accuracy than the ticket",
            "ticket",
            "reinit",
            "the ticket",
            "random re-init",
            "a_above",
            "test_accuracy_at_best_val",
            0.2,
        ),
        Claim(
            f"{_FC_RANDOM}: randomly sampled sparse networks of the ticket's sizes do worse "
            "than the ticket as pruning proceeds",
            "ticket",
            "random_mask",
            "the ticket",
            "random pruning",
            "a_above",
            "test_accuracy_at_best_val",
            0.2,
        ),
    ),
    "mnist1d_lottery_notebook": (),  # filled below: the same claims as mnist1d_lottery
    "mnist1d_methods": (),  # filled below
    "mnist1d_rewinding": (
        Claim(
            f"{_FC}: iterative pruning keeps tickets matching at smaller sizes than "
            "one-shot pruning",
            "init: ticket",
            "init: one_shot",
            "iterative pruning (init: ticket)",
            "one-shot pruning",
            "a_above",
            "test_accuracy_at_best_val",
            0.2,
        ),
        Claim(
            "Frankle et al. 2020, Linear Mode Connectivity and the Lottery Ticket Hypothesis "
            "(its sparse IMP experiments; final test accuracy): where the network is unstable "
            "to SGD noise at initialization (this MLP is at k = 0, see the instability study), "
            "rewinding to an early step k finds sparse subnetworks that do better than "
            "rewinding to initialization",
            "step500: ticket",
            "init: ticket",
            "rewinding to step 500",
            "rewinding to initialization",
            "a_above",
            at_most=0.2,
        ),
        Claim(
            "Renda et al. 2020, Comparing Rewinding and Fine-tuning in Neural Network Pruning "
            "(CIFAR-10 and ImageNet ResNets, final test accuracy): learning-rate rewinding "
            "matches or beats weight rewinding at every sparsity",
            "lr: ticket",
            "step500: ticket",
            "learning-rate rewinding",
            "weight rewinding to step 500",
            "a_not_below",
        ),
    ),
}


CLAIMS["mnist1d_lottery_notebook"] = CLAIMS["mnist1d_lottery"]

_F21 = (
    "Frankle et al. 2021, Pruning Neural Networks at Initialization: Why are We Missing the "
    "Mark? (final test accuracy)"
)
_PAI = (("snip", "SNIP"), ("grasp", "GraSP"), ("synflow", "SynFlow"))
CLAIMS["mnist1d_methods"] = (
    *(
        Claim(
            f"{_F21}: magnitude pruning after training (IMP) beats pruning at initialization "
            f"({name}) at moderate and high sparsity",
            "ticket",
            arm,
            "the ticket",
            name,
            "a_above",
            at_most=0.5,
        )
        for arm, name in _PAI
    ),
    *(
        Claim(
            f"{_F21}: {name}'s mask does no better than the same mask shuffled within each "
            "layer (only the per-layer densities matter)",
            f"{arm}_shuffled",
            arm,
            f"{name}, shuffled",
            name,
            "a_not_below",
        )
        for arm, name in _PAI
    ),
    *(
        Claim(
            "Tanaka et al. 2020, Pruning neural networks without any data by iteratively "
            f"conserving synaptic flow (final test accuracy): SynFlow beats {name} at extreme "
            f"sparsity (there: global pruning, where {name} can collapse whole layers; here every "
            "method keeps each layer's ticket count, pai.scope=layerwise, so no layer can "
            "collapse, and the sparsest round is far less sparse: only the choice of weights "
            "within each layer is compared)",
            "synflow",
            arm,
            "SynFlow",
            name,
            "a_above",
            at_most=0.05,
        )
        for arm, name in _PAI[:2]
    ),
)


def claims_for(folder: str) -> tuple[Claim, ...]:
    """The claims of the results folder named ``folder`` (its last path part)."""
    return CLAIMS.get(folder.rstrip("/").split("/")[-1], ())


def _scope(rows: Sequence[Mapping], claim: Claim) -> list[dict]:
    """Per round in scope: ``{round, density, c}`` of ``a - b`` on the claim's metric."""
    pts = []
    for r in sorted(rows, key=lambda r: r["round"]):
        if {r["a"], r["b"]} != {claim.a, claim.b} or r.get("b_round") != r.get("a_round"):
            continue
        if r["density"] > claim.at_most + 1e-12:
            continue
        c = dict(r[claim.metric])
        if r["a"] != claim.a:  # stored as b - a: turn it round
            c = {**c, "mean": -c["mean"] if c.get("mean") is not None else None}
            lo, hi = c.get("ci_low"), c.get("ci_high")
            c["ci_low"] = -hi if hi is not None else None
            c["ci_high"] = -lo if lo is not None else None
            c["wins"], c["losses"] = c.get("losses"), c.get("wins")
        pts.append({"round": r["round"], "density": r["density"], "c": c})
    return pts


def claim_lines(folder: str, rows: Sequence[Mapping]) -> list[str]:
    """One bullet per claim of ``folder``: the published finding, ours, and the verdict."""
    out = []
    for claim in claims_for(folder):
        pts = _scope(rows, claim)
        if not pts:
            continue
        found = ranges(pts)
        spans = {
            v: [(f["density_first"], f["density_last"]) for f in found if f["verdict"] == v]
            for v in (A_ABOVE, B_ABOVE)
        }
        above, below = spans[A_ABOVE], spans[B_ABOVE]
        ours = []
        if above:
            ours.append(f"{claim.a_label} above {claim.b_label} {where_density(above)}")
        if below:
            ours.append(f"{claim.b_label} above {claim.a_label} {where_density(below)}")
        if not ours:
            ours.append("no clear difference at any round in scope")
        elif len(above) + len(below) < len(found):
            ours.append("no clear difference at the other rounds in scope")
        if below:
            word = "disagrees"
        elif claim.expect == "a_not_below":
            word = "agrees"
        elif not above:
            word = "not shown"
        else:
            word = "agrees" if all(f["verdict"] == A_ABOVE for f in found) else "partly"
        scope = "" if claim.at_most >= 1 else f", at {claim.at_most:.0%} of the weights or fewer"
        metric = METRIC_NAMES[claim.metric]
        out.append(f"- **{word}**: {claim.published}. Ours ({metric}{scope}): {'; '.join(ours)}.")
    return out
