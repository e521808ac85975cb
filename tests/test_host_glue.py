"""The work between compiled chunks: done on the host, compiling nothing, changing no value.

A first run compiles every small program it dispatches (a tenth of a second
each on 2 CPU cores), so the glue of a round (joining arms, cutting trials,
counting masks, initializing) stays on the host in a single process. These
tests pin that it gives the values of the device versions it replaced.
"""

from __future__ import annotations

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import tiny_config

from lth_jax import lottery, masks, parallel, pruning

_COMPILES: list[str] = []


def _listener(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES.append(event)


jax.monitoring.register_event_duration_secs_listener(_listener)


def _compiles(fn, *args):
    before = len(_COMPILES)
    out = fn(*args)
    jax.block_until_ready(out)
    return out, len(_COMPILES) - before


@pytest.fixture(scope="module")
def exp():
    return lottery.Experiment(tiny_config(num_trials=3, num_devices=2))


def _equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y) for x, y in zip(la, lb)
    )


def test_init_per_key_equals_the_run_batched_program(exp):
    keys = exp.keys(0, "init")
    params, bs = exp.engine.init(keys)
    padded, n = parallel.pad_runs(jnp.asarray(keys), exp.engine.num_shards())
    assert n == 3 and padded.shape[0] == 4  # 3 trials on 2 devices: the padded batch
    ref = jax.tree.map(lambda a: a[:n], exp.engine._init(exp.engine.shard(padded)))
    assert _equal((params, bs), ref)
    assert all(isinstance(a, jax.Array) for a in jax.tree.leaves(params))


def test_concat_take_and_pad_compile_nothing(exp):
    params, _ = exp.engine.init(exp.keys(0, "init"))
    other = jax.tree.map(lambda a: a + 1.0, params)
    joined, c1 = _compiles(parallel.concat_runs, [params, other, params])
    part, c2 = _compiles(parallel.take_runs, joined, 3, 6)
    (padded, n), c3 = _compiles(parallel.pad_runs, jax.device_get(joined), 4)
    assert (c1, c2, c3) == (0, 0, 0)
    assert _equal(part, other) and n == 9
    ref = jax.tree.map(lambda *xs: jnp.concatenate(xs), params, other, params)
    assert _equal(joined, ref)
    assert all(a.shape[0] == 12 for a in jax.tree.leaves(padded))
    first = jax.tree.map(lambda a: np.repeat(np.asarray(a)[:1], 3, axis=0), joined)
    assert _equal(jax.tree.map(lambda a: a[9:], padded), first)  # the padding repeats run 0


def test_layer_alive_runs_equals_the_device_count():
    rs = np.random.RandomState(0)
    tree = {
        "Dense_0": {"kernel": rs.rand(4, 6, 5) < 0.4, "bias": rs.rand(4, 5) < 0.5},
        "Conv_0": {"kernel": rs.rand(4, 3, 3, 2, 4) < 0.7},
        "odd": {"kernel": rs.rand(4, 7) < 0.5},  # a 1-D kernel per run: not prunable by default
    }
    host = masks.layer_alive_runs(tree)
    device = jax.vmap(masks.layer_alive)(tree)
    assert sorted(host) == sorted(device) == ["Conv_0/kernel", "Dense_0/kernel"]
    for path, counts in device.items():
        assert np.array_equal(host[path], np.asarray(counts)) and host[path].shape == (4,)
    by_regex = masks.layer_alive_runs(tree, prunable="bias")
    assert list(by_regex) == ["Dense_0/bias"]
    assert np.array_equal(by_regex["Dense_0/bias"], tree["Dense_0"]["bias"].sum(1))


def _random_mask_double_argsort(key, mask):
    """The earlier definition: rank of each uniform draw by a second argsort."""
    flags = jax.tree.leaves(masks.prunable_tree(mask))
    leaves, treedef = jax.tree.flatten(mask)
    keys = jax.random.split(key, len(leaves))
    out = []
    for k, m, f in zip(keys, leaves, flags):
        m = jnp.asarray(m, dtype=bool)
        if f:
            rank = jnp.argsort(jnp.argsort(jax.random.uniform(k, (m.size,))))
            m = (rank < jnp.sum(m, dtype=jnp.int32)).reshape(m.shape)
        out.append(m)
    return jax.tree.unflatten(treedef, out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_mask_like_equals_the_double_argsort(seed):
    rs = np.random.RandomState(seed)
    mask = {
        "a": {"kernel": rs.rand(64, 30) < 0.3, "bias": np.ones(30, bool)},
        "b": {"kernel": np.ones((30, 10), bool)},
        "c": {"kernel": np.zeros((10, 4), bool)},
    }
    key = jax.random.PRNGKey(seed)
    new = jax.jit(pruning.random_mask_like)(key, mask)
    assert _equal(new, jax.jit(_random_mask_double_argsort)(key, mask))
    assert int(new["a"]["kernel"].sum()) == int(mask["a"]["kernel"].sum())


def test_pruning_on_every_device_gives_the_same_masks(exp):
    params, _ = exp.engine.init(np.concatenate([exp.keys(0, "init"), exp.keys(1, "init")[:1]]))
    mask = jax.tree.map(lambda p: np.ones(np.shape(p), bool), params)
    mesh = exp.engine.mesh
    assert parallel.num_shards(mesh) == 2
    sharded = parallel.shard_even((params, mask), mesh)
    assert jax.tree.leaves(sharded[0])[0].sharding.spec[0] == "runs"
    assert parallel.shard_even((params, mask), None)[0] is params
    prune = jax.jit(jax.vmap(lambda p, m: pruning.magnitude_prune(p, m, 0.4)))
    rand = jax.jit(jax.vmap(pruning.random_mask_like))
    one, spread = prune(params, mask), prune(*sharded)
    assert _equal(one, spread)
    keys = np.stack([np.asarray(jax.random.PRNGKey(i)) for i in range(4)])
    assert _equal(rand(keys, one), rand(keys, spread))
