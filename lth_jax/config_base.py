"""Every config key's default, and old ``config.json`` files brought to the current layout.

Kept apart from :mod:`lth_jax.config` (which re-exports all three names) because
nothing here imports JAX: ``lth-jax report --pool`` brings old workdirs' configs
to the current layout with :func:`upgrade_json` without starting it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import ml_collections

from lth_jax import workdir as wd

__all__ = ["MODEL_KWARGS", "base_config", "upgrade_json"]

#: The model attributes a config may set under ``model.kwargs``, with their types
#: (sequences are tuples). Which model takes which: :func:`lth_jax.models.kwargs_for`.
MODEL_KWARGS: dict[str, type] = {
    "features": tuple,  # MLP: hidden widths
    "conv_features": tuple,  # ConvNet: conv blocks, a tuple of tuples of widths
    "fc_features": tuple,  # ConvNet: hidden dense widths
    "plan": tuple,  # VGG: widths and "M" (max-pool)
    "batch_norm": bool,  # VGG
    "depth": int,  # ResNet: 6n + 2
    "widths": tuple,  # ResNet: widths of the three stages
    "shortcut": str,  # ResNet: "projection" | "A"
    "channels": int,  # CNN1D
    "kernel_sizes": tuple,  # CNN1D
    "strides": int,  # CNN1D
    "padding": int,  # CNN1D
    "activation": str,
    "input_dropout": float,
    "conv_dropout": float,
    "dropout": float,
    "bn_momentum": float,
    "bn_epsilon": float,
}


def base_config() -> ml_collections.ConfigDict:
    """Every config key with its default. See the README for their meaning."""
    c = ml_collections.ConfigDict()
    c.kind = "lottery"  # lottery | instability | transfer
    c.seed = 0
    c.num_trials = 1
    c.arms = ("ticket", "reinit", "random_mask")
    c.progress = True
    c.num_devices = 0  # 0: every local device

    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "mnist1d"
    c.dataset.data_dir = ml_collections.FieldReference(None, field_type=str)
    c.dataset.val_size = ml_collections.FieldReference(None, field_type=int)
    c.dataset.train_size = ml_collections.FieldReference(None, field_type=float)
    c.dataset.augment = False
    c.dataset.classes = ml_collections.FieldReference(None, field_type=tuple)

    c.model = ml_collections.ConfigDict()
    c.model.name = "mlp"
    c.model.kwargs = ml_collections.ConfigDict()  # None: the model's default
    for key, field_type in MODEL_KWARGS.items():
        c.model.kwargs[key] = ml_collections.FieldReference(None, field_type=field_type)

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000
    c.train.batch_size = 100
    c.train.eval_every = 100
    c.train.eval_batch_size = 1000
    c.train.early_stop_metric = "val_loss"  # val_loss | val_accuracy (lth_jax.curves)

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "adam"  # sgd | momentum | adam | adamw
    c.optimizer.learning_rate = 1e-3
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = False
    c.optimizer.schedule = "constant"  # constant | cosine | step | linear
    c.optimizer.warmup_steps = 0
    c.optimizer.step_boundaries = ()  # fractions of train.steps, for 'step'
    c.optimizer.step_factor = 0.1
    c.optimizer.l2 = 0.0  # coupled L2 (gradient of l2/2 ||w||^2), before the optimizer
    c.optimizer.weight_decay = 0.0  # decoupled, after the optimizer (AdamW)
    c.optimizer.l1 = 0.0  # proximal L1 (exact zeros), last in the chain
    c.optimizer.max_norm = 0.0  # max-norm of each unit's incoming weights; 0 = off
    c.optimizer.max_norm_head = True  # max-norm on the output layer too (False: hidden units only)
    c.optimizer.fused_adam_cpu = False  # Adam's step as one C++ kernel (CPU; fused_adam.py)

    c.imp = ml_collections.ConfigDict()
    c.imp.rounds = 5
    c.imp.prune_rate = 0.2
    c.imp.scope = "layerwise"  # layerwise | global
    c.imp.layer_rates = ()  # ((regex, rate), ...): the first match, in this order, wins
    c.imp.rewind_step = 0
    c.imp.rewind = "weights"  # weights | lr | finetune
    c.imp.one_shot_density = ml_collections.FieldReference(None, field_type=float)
    # imp.rewind=finetune: train at this constant rate; None: the schedule's last rate
    c.imp.finetune_lr = ml_collections.FieldReference(None, field_type=float)

    c.gmp = ml_collections.ConfigDict()  # arm gmp: gradual magnitude pruning (lth_jax.gmp)
    c.gmp.start = 0.0  # the pruning window, in fractions of a round's training steps
    c.gmp.end = 0.75
    c.gmp.every = 100  # steps between mask updates

    c.pai = ml_collections.ConfigDict()  # arms snip, grasp, synflow (lth_jax.saliency)
    c.pai.scope = "layerwise"  # layerwise: the ticket's per-layer counts | global: the method's
    c.pai.batch_size = 256  # training examples of the SNIP and GraSP scores
    c.pai.synflow_iterations = 100  # SynFlow's pruning steps (exponential schedule)
    c.pai.grasp_temperature = 200.0  # GraSP's scores on logits / T (the authors' code: T = 200)

    c.instability = ml_collections.ConfigDict()
    c.instability.num_points = 11  # points on the interpolation path, both ends included
    c.instability.batch_norm = "recompute"  # recompute | interpolate: running stats on the path

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.max_to_keep = ml_collections.FieldReference(None, field_type=int)
    # Mid-round checkpoints: also save at the end of the first chunk at or after
    # every multiple of this many steps of a round (0 = only at round ends).
    c.checkpoint.every_steps = 0

    c.log = ml_collections.ConfigDict()  # live metrics (lth_jax.events); results do not change
    c.log.tensorboard = True  # TensorBoard event files in <workdir>/tensorboard/, every chunk
    c.log.wandb = False  # also Weights & Biases (needs the wandb package)
    c.log.lines = True  # a plain line on stderr per chunk when progress bars are off
    return c


def upgrade_json(saved: dict) -> dict:
    """A ``config.json`` written before the current layout, in the current layout.

    * ``imp.layer_rates`` as an object ``{regex: rate}`` becomes the list of
      ``[regex, rate]`` pairs sorted by regex (the order its patterns were
      tried in);
    * ``model.kwargs`` gains every key of :data:`MODEL_KWARGS` it lacks, as
      ``None`` (the model's default);
    * ``imp.finetune_lr`` (added later) gets its default, ``None``;
    * ``pai.grasp_temperature`` (added later) gets ``1.0``, what GraSP ran with
      before it, in a config with a ``grasp`` arm, and its default otherwise;
    * a missing ``instability`` block, or key of it, gets its default
      (``instability.batch_norm``: ``recompute``; it changes nothing for
      networks without batch norm, the only ones run before it existed).

    A config already in the current layout is returned unchanged (as a copy);
    ``saved`` itself is not modified.

    Example:
      >>> old = {"imp": {"layer_rates": {"head": 0.1, "Conv_": 0.15}}, "model": {"kwargs": {}}}
      >>> new = upgrade_json(old)
      >>> new["imp"]["layer_rates"], new["model"]["kwargs"]["dropout"], new["instability"]
      ([['Conv_', 0.15], ['head', 0.1]], None, {'batch_norm': 'recompute', 'num_points': 11})
      >>> new["imp"]["finetune_lr"] is None
      True
    """
    out = copy.deepcopy(saved)
    defaults = wd.config_to_json(base_config())
    imp = out.get("imp")
    if isinstance(imp, dict) and isinstance(imp.get("layer_rates"), Mapping):
        imp["layer_rates"] = [[p, r] for p, r in sorted(imp["layer_rates"].items())]
    if isinstance(imp, dict):
        imp.setdefault("finetune_lr", defaults["imp"]["finetune_lr"])
    model = out.get("model")
    if isinstance(model, dict) and isinstance(model.get("kwargs", {}), Mapping):
        model["kwargs"] = {**defaults["model"]["kwargs"], **model.get("kwargs", {})}
    pai = out.get("pai")
    if isinstance(pai, dict) and "grasp_temperature" not in pai:  # GraSP ran at T = 1 then
        grasp = any(str(a).startswith("grasp") for a in out.get("arms", ()))
        pai["grasp_temperature"] = 1.0 if grasp else defaults["pai"]["grasp_temperature"]
    block = out.get("instability")
    if block is None:
        out["instability"] = dict(defaults["instability"])
    elif isinstance(block, dict):
        out["instability"] = {**defaults["instability"], **block}
    return out
