"""Parameter surgery for transfer: layer order, frozen layers, new heads, loaded weights, masks.

Pure functions over params (or their shapes) and masks; no config, no training.
The output layer of every model is ``head`` (see :mod:`lth_jax.models`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from lth_jax import masks as masks_lib
from lth_jax.checks import ConfigError

__all__ = [
    "HEAD",
    "TRAINABLE",
    "param_order",
    "layer_groups",
    "trainable_tree",
    "head_is_new",
    "load_params",
    "transfer_mask",
]

HEAD = "head"
TRAINABLE = ("all", "head", "all_but_first")


def param_order(model, sample) -> list[str]:
    """Leaf paths of ``model``'s params in the order the model creates them.

    (``jax.tree`` flattening sorts dict keys, so ``Dense_10`` would come before
    ``Dense_2``; this reads the creation order of ``model.init`` without
    computing anything.)

    Example:
      >>> import jax.numpy as jnp
      >>> from lth_jax import models
      >>> param_order(models.get("mlp", features=(4,)), jnp.zeros((1, 3)))
      ['Dense_0/kernel', 'Dense_0/bias', 'head/kernel', 'head/bias']
    """
    order: list[str] = []

    def init(key):
        variables = model.init({"params": key}, sample, train=False)
        order.extend(flax.traverse_util.flatten_dict(variables["params"], sep="/"))
        return variables

    jax.eval_shape(init, jax.random.PRNGKey(0))
    return order


def layer_groups(
    order: Sequence[str], shapes: Mapping[str, tuple] | None = None
) -> list[list[str]]:
    """Groups leaf paths (in creation order) into layers: a kernel and what follows it.

    A new layer starts at every leaf named ``kernel`` (with ``ndim >= 2`` when
    ``shapes`` is given); leaves before the first kernel join the first layer.

    Example:
      >>> layer_groups(["c/kernel", "c/bias", "bn/scale", "head/kernel", "head/bias"])
      [['c/kernel', 'c/bias', 'bn/scale'], ['head/kernel', 'head/bias']]
    """
    groups: list[list[str]] = []
    for path in order:
        is_kernel = path.split("/")[-1] == "kernel" and (
            shapes is None or len(shapes.get(path, ())) >= 2
        )
        if is_kernel or not groups:
            groups.append([path])
        else:
            groups[-1].append(path)
    return groups


def trainable_tree(params, order: Sequence[str], trainable: str = "all", freeze_layers: int = 0):
    """A pytree of Python bools shaped like ``params``: ``True`` where a leaf trains.

    Args:
      params: params (or shapes) of the target model.
      order: the leaf paths in creation order (:func:`param_order`).
      trainable: ``all``, ``head`` (only leaves under ``head/``) or
        ``all_but_first`` (all but the first ``freeze_layers`` layers of
        :func:`layer_groups`).
      freeze_layers: ``k`` for ``all_but_first``.

    Raises:
      ValueError: an unknown mode, or ``k`` not leaving at least the last layer
        (the head) trainable.

    Example:
      >>> import jax.numpy as jnp
      >>> p = {"Dense_0": {"kernel": jnp.ones((2, 2))}, "head": {"kernel": jnp.ones((2, 2))}}
      >>> trainable_tree(p, ["Dense_0/kernel", "head/kernel"], "head")
      {'Dense_0': {'kernel': False}, 'head': {'kernel': True}}
    """
    paths = [p for p, _ in masks_lib.named_leaves(params)]
    if trainable == "all":
        flags = {p: True for p in paths}
    elif trainable == "head":
        flags = {p: p.split("/")[0] == HEAD for p in paths}
    elif trainable == "all_but_first":
        shapes = {p: np.shape(x) for p, x in masks_lib.named_leaves(params)}
        groups = layer_groups([p for p in order if p in shapes], shapes)
        if not 1 <= freeze_layers < len(groups):
            raise ValueError(
                f"finetune.freeze_layers must be in [1, {len(groups) - 1}] (the model has "
                f"{len(groups)} layers and the last must train), got {freeze_layers}"
            )
        frozen = {p for g in groups[:freeze_layers] for p in g}
        flags = {p: p not in frozen for p in paths}
    else:
        raise ValueError(f"trainable must be one of {', '.join(TRAINABLE)}, got {trainable!r}")
    treedef = jax.tree.structure(params)
    return jax.tree.unflatten(treedef, [flags[p] for p in paths])


def head_is_new(source_classes: int, target_classes: int, reuse_head: bool = False) -> bool:
    """Whether fine-tuning gets a fresh head; never reuses a head of the wrong size.

    Reuses the source head only when asked **and** the class counts are equal.

    Raises:
      ConfigError: ``reuse_head`` with different class counts.

    Example:
      >>> head_is_new(5, 5), head_is_new(5, 5, reuse_head=True), head_is_new(10, 5)
      (True, False, True)
    """
    if not reuse_head:
        return True
    if int(source_classes) != int(target_classes):
        raise ConfigError(
            f"finetune.reuse_head=True, but the source head has {source_classes} outputs and the "
            f"target has {target_classes} classes; set finetune.reuse_head=False for a new head"
        )
    return False


def load_params(init, pretrained, dont_load: Sequence[str] = (r"^head/",)):
    """``init`` with every leaf taken from ``pretrained`` except those matching ``dont_load``.

    big_vision's "load and reset the head": leaves whose path
    (``"head/kernel"``) matches a ``dont_load`` regex keep their value from
    ``init``; every other leaf must exist in ``pretrained`` with the same
    shape. Extra leaves in ``pretrained`` are an error too, unless they match
    ``dont_load`` (the old head), so a mismatched architecture never loads
    halfway.

    Works on single params or on trees with a leading run axis (then both must
    have the same leading size).

    Raises:
      ValueError: a missing, extra or differently shaped leaf (named).

    Example:
      >>> import jax.numpy as jnp
      >>> init = {"body": {"kernel": jnp.zeros((2, 2))}, "head": {"kernel": jnp.zeros((2, 3))}}
      >>> pre = {"body": {"kernel": jnp.ones((2, 2))}, "head": {"kernel": jnp.ones((2, 10))}}
      >>> out = load_params(init, pre)
      >>> float(out["body"]["kernel"][0, 0]), out["head"]["kernel"].shape
      (1.0, (2, 3))
      >>> float(out["head"]["kernel"].sum())  # the new head keeps its init
      0.0
    """
    rx = [re.compile(p) for p in dont_load]
    skip = lambda path: any(r.search(path) for r in rx)
    src = dict(masks_lib.named_leaves(pretrained))
    leaves = masks_lib.named_leaves(init)
    want = {p for p, _ in leaves}
    extra = sorted(p for p in src if p not in want and not skip(p))
    if extra:
        raise ValueError(f"pretrained params have leaves the target model lacks: {extra}")
    out = []
    for path, x in leaves:
        if skip(path):
            out.append(x)
            continue
        if path not in src:
            raise ValueError(f"pretrained params lack {path!r}")
        y = src[path]
        if np.shape(y) != np.shape(x):
            raise ValueError(
                f"pretrained {path!r} has shape {np.shape(y)}, the target model needs {np.shape(x)}"
            )
        out.append(jnp.asarray(y, dtype=jnp.result_type(x)))
    return jax.tree.unflatten(jax.tree.structure(init), out)


def transfer_mask(
    source_mask, target_shapes, key, head_new: bool = True, head: str = "source_density"
):
    """Carries a source ticket's mask to the target model (one run, no leading axis).

    Every leaf but the head's comes from ``source_mask`` (same paths and
    shapes). A reused head keeps its mask. A new head is all alive
    (``head="dense"``) or gets a random mask with ``round(d * n)`` of its ``n``
    kernel weights alive, ``d`` the source head kernel's density
    (``head="source_density"``); its bias stays alive.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> src = {"Dense_0": {"kernel": jnp.array([[True, False]])},
      ...        "head": {"kernel": jnp.array([[True, False, False, False]] * 2)}}
      >>> shapes = {"Dense_0": {"kernel": (1, 2)}, "head": {"kernel": (2, 2)}}
      >>> m = transfer_mask(src, shapes, jax.random.PRNGKey(0))
      >>> m["Dense_0"]["kernel"].tolist(), int(m["head"]["kernel"].sum())
      ([[True, False]], 1)
    """
    src = dict(masks_lib.named_leaves(source_mask))
    is_shape = lambda x: isinstance(x, tuple) and all(isinstance(i, int) for i in x)
    flat, treedef = jax.tree_util.tree_flatten_with_path(target_shapes, is_leaf=is_shape)
    out = []
    for path, leaf in flat:
        p = masks_lib.path_str(path)
        shape = tuple(leaf) if is_shape(leaf) else np.shape(leaf)
        if p.split("/")[0] == HEAD and head_new:
            if head == "dense" or p.split("/")[-1] != "kernel" or p not in src:
                out.append(jnp.ones(shape, bool))
                continue
            d = jnp.mean(jnp.asarray(src[p], jnp.float32))
            n = int(np.prod(shape))
            alive = jnp.floor(d * n + 0.5).astype(jnp.int32)
            rank = jnp.argsort(jnp.argsort(jax.random.uniform(key, (n,))))
            out.append((rank < alive).reshape(shape))
            continue
        if p not in src or np.shape(src[p]) != shape:
            raise ValueError(f"source mask has no leaf {p!r} of shape {shape}")
        out.append(jnp.asarray(src[p], bool))
    return jax.tree.unflatten(treedef, out)
