"""A one-pass masked Adam step on CPUs: ``optimizer.fused_adam_cpu`` (opt-in).

On a CPU, XLA compiles the engine's masked Adam step (:func:`lth_jax.optim.make_optimizer`:
``keep_pruned`` around ``optax.adam``, then the non-finite-loss guard) into three
loops over every weight array: the first moment, the second, then the weights
(which compute both moments again). A C++ kernel, called through XLA's FFI,
does the whole step in one loop, in place: each weight's value, moments,
gradient and mask are read once and written once (the README's performance
table measures what that gains: ``experiments/benchmark.py``).

**What it computes.** For a weight ``p`` with mask ``c``, moments ``m, v``,
gradient ``g``, learning rate ``lr`` and step count ``t`` (after this step),
optax's defaults ``b1 = 0.9``, ``b2 = 0.999``, ``eps = 1e-8``::

    g' = g if c else 0
    m  = (1 - b1) * g' + b1 * m
    v  = (1 - b2) * g'^2 + b2 * v
    p  = p + (-lr * (m / ((1 - b1^t) * (sqrt(v / (1 - b2^t)) + eps))) if c else 0)

when the run is alive and the step's loss finite; otherwise nothing changes
(the engine's guard, :func:`lth_jax.loop.train_step`). That is Adam as optax
defines it, in the form XLA compiles optax's to (one division by the product of
the two bias corrections' terms). Pruned weights stay exactly 0, as with
:func:`lth_jax.masks.keep_pruned`. The optimizer state keeps optax's layout
(checkpoints look the same).

**Not bit-identical to optax.** Each operation is one IEEE float32 operation
(built with ``-ffp-contract=off``, no fast math), so the vector instructions
the compiler picks do not change a bit; XLA fuses some multiply-adds into FMAs,
differently in each of its loops. So values differ from the default's in the
last bits, and the difference grows over training as any change of float
rounding does: a trial's final accuracy, early-stop step or error barrier can
move by whole points, more so at high learning rates (the benchmark's
``fused_adam_cpu`` row says how far apart the same runs end). Compare arms run
with the same setting. A workdir records the key: a run is never resumed with
the other update (:mod:`lth_jax.workdir`), and the report's config line names it.

**When it pays.** It saves memory traffic of the update, so it gains most when
the update is a large share of a step: many trials, wide layers, small batches
(the README's performance table: 8 trials of LeNet-300-100 on 2 cores). On a
small model the step is dominated by other work and it saves little, and the
first run on a machine also compiles the kernel.

**Where it applies.** ``optimizer.name`` ``adam`` (or ``adamw``) with no
``l2``, ``weight_decay``, ``l1`` or ``max_norm``, in lottery and instability
runs, on the CPU backend, with float32 params; anything else is refused before
training (:func:`check`, raising :class:`Unusable`).

**The build.** The kernel's source, ``fused_adam.cc``, ships with the package
and is compiled once per machine by the C++ compiler ``$CXX`` (default
``c++``; C++17) against jaxlib's FFI headers, with ``-O3 -march=native``, into
``$LTH_JAX_KERNEL_CACHE`` (default ``~/.cache/lth_jax/kernels``), a file named
by a hash of the source, the flags, the compiler, jaxlib and the CPU. Without a
compiler the run stops with :class:`KernelBuildError` saying how to get one.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import optax

__all__ = [
    "Unusable",
    "KernelBuildError",
    "TARGET",
    "build",
    "load",
    "prepare",
    "problem",
    "check",
    "update",
    "cache_dir",
]

#: The FFI target's name, as registered with XLA.
TARGET = "lth_jax_masked_adam"
_SOURCE = Path(__file__).with_name("fused_adam.cc")
_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-fno-math-errno", "-w")
#: optax.adam's defaults, which the engine's Adam uses.
B1, B2, EPS = 0.9, 0.999, 1e-8
_loaded: dict[str, ctypes.CDLL] = {}


class Unusable(ValueError):
    """The kernel cannot run this optimizer, engine, backend or state (the message says why)."""


class KernelBuildError(RuntimeError):
    """The kernel could not be compiled or loaded.

    The message (one line) says what to do; ``detail`` holds the compiler's
    output, if it ran.
    """

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


def cache_dir() -> Path:
    """Where built kernels are kept: ``$LTH_JAX_KERNEL_CACHE`` or ``~/.cache/lth_jax/kernels``."""
    env = os.environ.get("LTH_JAX_KERNEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lth_jax" / "kernels"


def _cpu() -> str:
    """The CPU's model and feature flags (``-march=native`` code runs only on such a CPU)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    keep = [ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features")]
    return "\n".join(sorted(set(keep))) or f"{platform.machine()} {platform.processor()}"


def _compiler() -> tuple[list[str], str]:
    """``(command, version line)`` of ``$CXX`` (default ``c++``; ``ccache g++`` works too)."""
    words = shlex.split(os.environ.get("CXX", "c++")) or ["c++"]
    name = words[0]
    path = shutil.which(name)
    if path is None:
        raise KernelBuildError(
            f"optimizer.fused_adam_cpu builds a C++ kernel once per machine, and the compiler "
            f"{name!r} was not found: install one (Debian/Ubuntu: apt install g++) or point CXX "
            "at one, or set optimizer.fused_adam_cpu=false"
        )
    out = subprocess.run([path, *words[1:], "--version"], capture_output=True, text=True)
    return [path, *words[1:]], (out.stdout.splitlines() or [""])[0]


def build(directory: str | os.PathLike | None = None) -> Path:
    """Compiles the kernel unless a build for this machine exists; returns the library's path.

    Args:
      directory: where to keep it; default :func:`cache_dir`.

    Returns:
      The path of the shared library (built at most once per source, flags,
      compiler, jaxlib version and CPU; written atomically, so processes that
      build at once do not clash).

    Raises:
      KernelBuildError: no compiler, or the compilation failed (its output is
        in the message).
    """
    cxx, version = _compiler()
    source = _SOURCE.read_bytes()
    include = jax.ffi.include_dir()
    key = hashlib.sha256(
        b"\0".join(
            [source, " ".join(_FLAGS).encode(), version.encode(), jaxlib.__version__.encode()]
            + [_cpu().encode()]
        )
    ).hexdigest()[:20]
    out_dir = Path(directory) if directory is not None else cache_dir()
    lib = out_dir / f"fused_adam-{key}.so"
    if lib.exists():
        return lib
    errors = []
    # -march=native: the CPU's vector instructions (without them GCC leaves the
    # loop's selects scalar on x86-64, slower than XLA); a compiler without it
    # builds the portable code, and says so.
    for arch in (["-march=native"], []):
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".building-", suffix=".so", dir=out_dir)
        except OSError as e:
            raise KernelBuildError(
                f"optimizer.fused_adam_cpu: cannot write its kernel to {out_dir} ({e}); set "
                "LTH_JAX_KERNEL_CACHE to a writable directory"
            ) from e
        os.close(fd)
        cmd = [*cxx, *_FLAGS, *arch, f"-I{include}", str(_SOURCE), "-o", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            os.replace(tmp, lib)
            if not arch:
                print(
                    f"warning: {cxx[0]} refused -march=native; the fused Adam kernel is built "
                    "for any CPU of this kind and may be slower than XLA's update",
                    file=sys.stderr,
                )
            return lib
        os.unlink(tmp)
        errors.append(f"$ {' '.join(cmd)}\n{done.stderr.strip()[-2000:]}")
    raise KernelBuildError(
        f"optimizer.fused_adam_cpu: compiling its C++ kernel with {cxx[0]} failed (its output "
        "follows); set optimizer.fused_adam_cpu=false to train with optax's Adam",
        "\n".join(errors),
    )


def load() -> None:
    """Builds (once per machine) and registers the kernel with XLA (once per process)."""
    if TARGET in _loaded:
        return
    path = build()
    try:
        lib = ctypes.CDLL(str(path))
        handler = lib.LthJaxMaskedAdam
    except (OSError, AttributeError) as e:
        raise KernelBuildError(
            f"optimizer.fused_adam_cpu: cannot load its kernel {path} ({e}); delete it to "
            "rebuild, or set optimizer.fused_adam_cpu=false"
        ) from e
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(handler), platform="cpu")
    _loaded[TARGET] = lib


def problem(opt) -> str | None:
    """Why ``optimizer.fused_adam_cpu`` cannot run the ``optimizer`` block ``opt``, or ``None``.

    The kernel is plain Adam: ``name`` ``adam`` or ``adamw`` and no ``l2``,
    ``weight_decay``, ``l1`` or ``max_norm``.

    Example:
      >>> import ml_collections
      >>> opt = ml_collections.ConfigDict(dict(name="adam", l2=0.0, weight_decay=1e-4))
      >>> problem(opt)
      'it runs plain Adam, and optimizer.weight_decay=0.0001 adds to it: set it to 0'
    """
    if opt.get("name") not in ("adam", "adamw"):
        return (
            f"it runs Adam, and optimizer.name is {opt.get('name')!r}: set optimizer.name=adam, "
            "or optimizer.fused_adam_cpu=false"
        )
    for key in ("l2", "weight_decay", "l1", "max_norm"):
        if opt.get(key, 0.0):
            value = f"optimizer.{key}={opt.get(key):g}"
            return f"it runs plain Adam, and {value} adds to it: set it to 0"
    return None


def prepare(optimizer, tx=None, platform_name: str | None = None) -> None:
    """:func:`check`, then :func:`load`: what an engine with the kernel does first.

    ``platform_name`` defaults to the default backend's (``jax.devices()[0]``).
    """
    check(optimizer, tx, platform_name or jax.devices()[0].platform)
    load()


def check(optimizer, tx=None, platform_name: str | None = None) -> None:
    """Raises :class:`Unusable` unless the kernel can run this engine's update.

    It needs the chain to be plain Adam (:func:`problem`), the config's own
    optimizer (no ``tx`` given) and the CPU backend (``platform_name``; ``None``
    checks the config alone, as :func:`lth_jax.config.validate` does).
    """
    why = problem(optimizer)
    if why is None and tx is not None:
        why = "it runs the config's own optimizer, and this engine was given another (tx)"
    if why is None and platform_name not in (None, "cpu"):
        why = f"it is a CPU kernel, and this run's backend is {platform_name}"
    if why is not None:
        raise Unusable(f"optimizer.fused_adam_cpu=true cannot be used: {why}")


def _adam_state(opt_state):
    """The ``ScaleByAdamState`` in :func:`lth_jax.optim.make_optimizer`'s state layout."""
    adam = opt_state.inner_state.inner_state[0][0]
    if not isinstance(adam, optax.ScaleByAdamState):
        raise Unusable(
            f"optimizer.fused_adam_cpu expects optax.adam's state, got {type(adam).__name__}"
        )
    return adam


def update(grads, opt_state, params, lr, ok):
    """One masked Adam step of one run, by the kernel: ``(params, opt_state)`` after it.

    Args:
      grads, params: the run's gradients and params (float32 pytrees).
      opt_state: the run's state, in :func:`lth_jax.optim.make_optimizer`'s layout
        (the mask in a ``KeepPrunedState`` around ``inject_hyperparams`` and Adam).
      lr: the step's learning rate (a scalar).
      ok: a boolean scalar; when false the step changes nothing (the state's
        counts and learning rate included), as the engine's guard does.

    Returns:
      The new params and optimizer state. Call :func:`load` first.
    """
    for leaf in jax.tree.leaves(params):
        if leaf.dtype != jnp.float32:
            raise Unusable(f"optimizer.fused_adam_cpu needs float32 params, got {leaf.dtype}")
    for leaf in jax.tree.leaves(opt_state.mask):
        if leaf.dtype != jnp.bool_:
            raise Unusable(f"fused_adam.update needs boolean masks, got {leaf.dtype}")
    inject = opt_state.inner_state
    adam = _adam_state(opt_state)
    count = optax.safe_increment(adam.count)
    lr32 = jnp.asarray(lr, jnp.float32)
    hyper = jnp.stack(
        [
            -lr32,
            jnp.float32(B1),
            jnp.float32(1 - B1),
            jnp.float32(B2),
            jnp.float32(1 - B2),
            (1 - B1**count).astype(jnp.float32),  # as optax.bias_correction computes it
            (1 - B2**count).astype(jnp.float32),
            jnp.float32(EPS),
        ]
    )
    ok = jnp.asarray(ok, bool).reshape(1)

    def leaf(p, m, v, g, c):
        shape = jax.ShapeDtypeStruct(p.shape, jnp.float32)
        call = jax.ffi.ffi_call(
            TARGET,
            (shape, shape, shape),
            input_output_aliases={0: 0, 1: 1, 2: 2},
            vmap_method="sequential",
        )
        return call(p, m, v, g, c, hyper, ok)

    out = jax.tree.map(leaf, params, adam.mu, adam.nu, grads, opt_state.mask)
    is_out = lambda x: isinstance(x, tuple)
    part = lambda j: jax.tree.map(lambda o: o[j], out, is_leaf=is_out)
    keep = lambda new, old: jnp.where(ok[0], new, old)
    adam = adam._replace(count=keep(count, adam.count), mu=part(1), nu=part(2))
    hp = dict(inject.hyperparams)
    hp["learning_rate"] = keep(lr32.astype(hp["learning_rate"].dtype), hp["learning_rate"])
    chain = inject.inner_state
    inject = inject._replace(
        count=keep(optax.safe_increment(inject.count), inject.count),
        hyperparams=hp,
        inner_state=((adam, *chain[0][1:]), *chain[1:]),
    )
    return part(0), opt_state._replace(inner_state=inject)
