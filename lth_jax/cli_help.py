"""The ``lth-jax`` help texts, in plain text: the command list and ``run --help``.

``run --help`` lists every config key with its value and a one-line meaning
from :data:`KEY_MEANINGS` (the comments in :func:`lth_jax.config.base_config`
are not available at run time); ``tests/test_cli_help.py`` checks that every
key of :func:`lth_jax.config.known_keys` and of the transfer kind's config has
one. ``report --help`` and ``export --help`` are argparse's, from ``cli.py``.

Imports nothing that imports JAX: ``lth-jax --help`` and ``lth-jax report``
stay fast.
"""

from __future__ import annotations

import os
import sys
import textwrap

from lth_jax import checks

__all__ = ["COMMANDS", "KEY_MEANINGS", "emit", "main_help", "meaning", "run_help", "format_value"]

WIDTH = 100

#: One line per command, for ``lth-jax --help``.
COMMANDS = {
    "run": "run an experiment into a workdir (the same command again resumes it)",
    "report": "tables, figures and paired comparisons from the metrics of workdirs",
    "export": "write one run of a lottery workdir as a sparse model file",
    "sweep": "one run workdir per point of a grid of config values, here or on SLURM",
    "presets": "the experiment presets installed with the package, with their results",
}

_MODEL = "model.kwargs."

#: What each config key means, one line each, in the order ``run --help`` lists them.
#: Keys of the transfer kind (``transfer.*``, ``target.*``, ``finetune.*``) follow.
KEY_MEANINGS: dict[str, str] = {
    "kind": "the experiment: lottery | instability | transfer",
    "seed": "random keys come from (seed, trial, round, purpose); < 2^32",
    "num_trials": "independent trials of every arm (trial t's keys: (seed, t, ...))",
    "arms": "the arms of every round: ticket, reinit, random_mask, gmp, ...",
    "progress": "show progress bars",
    "num_devices": "devices to spread a round's runs over (0: every local device)",
    "dataset.name": "mnist1d (offline) | mnist | fashion_mnist | cifar10 | cifar100",
    "dataset.data_dir": "dataset directory (None: $LTH_JAX_DATA_DIR, $TFDS_DATA_DIR, ...)",
    "dataset.val_size": "validation examples out of training (None: 5000, MNIST-1D 500)",
    "dataset.train_size": "training examples kept: a count or a fraction (None: all)",
    "dataset.augment": "random crop and flip of training images (CIFAR)",
    "dataset.classes": "keep only these class labels, relabelled 0.. (None: all)",
    "model.name": "mlp, lenet300_100, conv2/4/6, vgg19, vgg19_bn, resnet20, cnn1d",
    _MODEL + "features": "MLP: hidden widths (None, in model.kwargs: the model's default)",
    _MODEL + "conv_features": "ConvNet: conv blocks, a tuple of tuples of widths",
    _MODEL + "fc_features": "ConvNet: hidden dense widths",
    _MODEL + "plan": "VGG: widths and 'M' (max-pool)",
    _MODEL + "batch_norm": "VGG: batch norm after each conv",
    _MODEL + "depth": "ResNet: depth, 6n + 2",
    _MODEL + "widths": "ResNet: widths of the three stages",
    _MODEL + "shortcut": "ResNet: projection | A",
    _MODEL + "channels": "CNN1D: channels of each conv layer",
    _MODEL + "kernel_sizes": "CNN1D: kernel size of each conv layer",
    _MODEL + "strides": "CNN1D: stride of the conv layers",
    _MODEL + "padding": "CNN1D: padding of the conv layers",
    _MODEL + "activation": "activation by name (relu, tanh, ...)",
    _MODEL + "input_dropout": "dropout rate on the input",
    _MODEL + "conv_dropout": "dropout rate after conv layers",
    _MODEL + "dropout": "dropout rate of the hidden features (never on the logits)",
    _MODEL + "bn_momentum": "batch norm: momentum of the running statistics",
    _MODEL + "bn_epsilon": "batch norm: epsilon",
    "train.steps": "training steps of every round",
    "train.batch_size": "training batch size",
    "train.eval_every": "steps between evaluations (divides train.steps)",
    "train.eval_batch_size": "batch size of evaluation (memory only; results do not change)",
    "train.early_stop_metric": "val_loss | val_accuracy: picks the reported early-stop step",
    "optimizer.name": "sgd | momentum | adam | adamw",
    "optimizer.learning_rate": "peak learning rate",
    "optimizer.momentum": "momentum of the momentum optimizer",
    "optimizer.nesterov": "Nesterov momentum (momentum optimizer)",
    "optimizer.schedule": "learning-rate schedule: constant | cosine | step | linear",
    "optimizer.warmup_steps": "steps of linear warmup from 0",
    "optimizer.step_boundaries": "schedule step: fractions of train.steps where the rate drops",
    "optimizer.step_factor": "schedule step: factor applied at each boundary",
    "optimizer.l2": "coupled L2 (in the gradient, before the optimizer); 0: off",
    "optimizer.weight_decay": "decoupled weight decay (after the optimizer, AdamW); 0: off",
    "optimizer.l1": "proximal L1 (exact zeros), last in the chain; 0: off",
    "optimizer.max_norm": "max-norm of each unit's incoming weights; 0: off",
    "optimizer.max_norm_head": "max-norm on the output layer too (false: hidden units only)",
    "optimizer.fused_adam_cpu": "Adam's step as one C++ kernel on CPUs (opt-in; not bit-identical)",
    "imp.rounds": "pruning rounds after the dense round 0",
    "imp.prune_rate": "fraction of the alive prunable weights removed each round",
    "imp.scope": "layerwise (rank within each layer) | global (all together)",
    "imp.layer_rates": "((regex, rate), ...): per-layer rates, the first match wins",
    "imp.rewind_step": "step k the ticket rewinds to (0: initialization)",
    "imp.rewind": "weights (to step k) | lr (learning-rate rewinding) | finetune",
    "imp.one_shot_density": "prune once to this density (needs imp.rounds=1; None: off)",
    "imp.finetune_lr": "rate of imp.rewind=finetune (None: the schedule's last rate)",
    "gmp.start": "arm gmp: start of pruning, a fraction of a round's steps",
    "gmp.end": "arm gmp: end of pruning, a fraction of a round's steps",
    "gmp.every": "arm gmp: steps between mask updates",
    "pai.scope": "arms snip, grasp, synflow: layerwise (ticket's counts) | global",
    "pai.batch_size": "arms snip, grasp: training examples of the scores",
    "pai.synflow_iterations": "arm synflow: pruning steps (exponential schedule)",
    "pai.grasp_temperature": "arm grasp: scores on logits / T (the authors' code: 200)",
    "instability.num_points": "kind instability: points on the path, both ends included",
    "instability.batch_norm": "kind instability: recompute | interpolate batch-norm statistics",
    "checkpoint.max_to_keep": "keep the checkpoints of the last N rounds (None: all)",
    "checkpoint.every_steps": "also checkpoint every N steps of a round (0: round ends only)",
    "log.tensorboard": "TensorBoard event files in <workdir>/tensorboard/, written every chunk",
    "log.wandb": "also log the live metrics to Weights & Biases (needs the wandb package)",
    "log.lines": "a plain line on stderr per chunk when progress bars are off (progress=False)",
    # kind transfer (lth_jax.transfer)
    "transfer.arms": "scratch, pretrained (+dropout, +l2sp), ticket_source, ...",
    "transfer.pretrained_workdir": "load the source from this workdir (None: pretrain here)",
    "transfer.pretrained_round": "round of transfer.pretrained_workdir to load (0: dense)",
    "transfer.ticket_head": "a new head of ticket arms: source_density (masked) | dense",
    "target.name": "target dataset (as dataset.name)",
    "target.data_dir": "target data directory (as dataset.data_dir)",
    "target.classes": "target class labels to keep (None: all)",
    "target.val_size": "target validation examples (None: the dataset's default)",
    "target.train_sizes": "target training-set sizes: fractions in (0, 1] or counts",
    "target.augment": "random crop and flip of target training images",
    "finetune.steps": "fine-tuning steps",
    "finetune.batch_size": "fine-tuning batch size",
    "finetune.eval_every": "fine-tuning steps between evaluations",
    "finetune.eval_batch_size": "fine-tuning evaluation batch size",
    "finetune.trainable": "what pretrained arms train: all | head | all_but_first",
    "finetune.freeze_layers": "trainable=all_but_first: the first N layers are frozen",
    "finetune.reuse_head": "reuse the source head when the class counts are equal",
    "finetune.dropout": "dropout rate of the +dropout arms",
    "finetune.input_dropout": "input dropout rate of the +dropout arms",
    "finetune.l2_sp": "strength of L2 toward the pretrained weights (+l2sp arms)",
}


def emit(text: str) -> None:
    """Prints ``text``; a reader that stops early (``lth-jax run --help | head``) is no error."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit


def meaning(key: str) -> str:
    """The one-line meaning of config key ``key`` (``""`` when there is none)."""
    if key.startswith("finetune.optimizer."):  # a whole optimizer block, for fine-tuning
        inner = KEY_MEANINGS.get("optimizer." + key.removeprefix("finetune.optimizer."), "")
        return f"fine-tuning: {inner}" if inner else ""
    return KEY_MEANINGS.get(key, "")


def format_value(value) -> str:
    """A config value as it is written on the command line (strings bare)."""
    if isinstance(value, str):
        return value or "''"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _rows(rows, indent: int = 2, column: int = 24) -> str:
    """Two-column help rows, argparse style: the text at ``column`` or on the next line."""
    out = []
    for left, text in rows:
        head = " " * indent + left
        wrap = textwrap.wrap(text, WIDTH - column, break_long_words=False, break_on_hyphens=False)
        wrap = wrap or [""]
        if len(head) + 2 <= column:
            out.append(head.ljust(column) + wrap[0])
            wrap = wrap[1:]
        else:
            out.append(head)
        out.extend(" " * column + line for line in wrap)
    return "\n".join(line.rstrip() for line in out)


def _usage_line(line: str, indent: str = "  ") -> str:
    """One command's usage, wrapped at its options."""
    line = line.replace("usage:", "").strip()
    more = " " * (len(indent) + len(line.split()[0]) + len(line.split()[1]) + 2)
    return textwrap.fill(
        line, WIDTH, initial_indent=indent, subsequent_indent=more, break_on_hyphens=False
    )


def _para(text: str) -> str:
    return textwrap.fill(
        " ".join(text.split()), WIDTH, break_long_words=False, break_on_hyphens=False
    )


EXIT_STATUS = (
    ("0", "done"),
    (
        "2",
        "bad input: a bad argument, config file or config value, an LTH_JAX_* variable, a "
        "dataset that cannot be loaded here; one line on stderr (lth-jax: error: ...) naming it",
    ),
    (
        "1",
        "the run could not go on (every dense trial diverged, disk full, no coordinator): "
        "one line, or a traceback for anything unexpected",
    ),
    (
        "130, 143",
        "stopped by SIGINT or SIGTERM after saving a checkpoint: run the same command to resume",
    ),
)


def main_help(usage: str, version: str) -> str:
    """``lth-jax --help``: the commands, the global options and the exit status."""
    names = [line.split()[1] for line in usage.replace("usage:", "").splitlines() if line.strip()]
    commands = [(n, COMMANDS.get(n, "")) for n in dict.fromkeys(names)]
    return "\n".join(
        [
            "usage: lth-jax [-h] [--version] COMMAND [ARGS ...]",
            "",
            f"lth_jax {version}: lottery tickets, dropout, regularization and transfer learning "
            "in JAX.",
            "",
            "commands:",
            _rows(commands, column=12),
            "",
            "options:",
            _rows(
                [
                    ("-h, --help", "show this help and exit"),
                    ("--version", "print the version and exit"),
                ],
                column=14,
            ),
            "",
            _para(
                "Run 'lth-jax COMMAND --help' for a command's options and their defaults; "
                "'lth-jax run --help' also lists every config key."
            ),
            "",
            "synopsis:",
            *(_usage_line(line) for line in usage.splitlines()),
            "",
            "exit status:",
            _rows(EXIT_STATUS, column=12),
        ]
    )


#: ``lth-jax presets``: its parser's description.
PRESETS = {
    "description": "Lists the experiment presets shipped in lth_jax/configs/: per preset its "
    "name and summary, the command that runs it (--config preset:NAME[:ARG]), the published "
    "result it is compared with and ours (generated from committed metrics; 'not run' where "
    "we have none). With NAME: that preset's whole description."
}

#: ``lth-jax report`` and ``export``: their parsers' descriptions and longer option help.
REPORT = {
    "description": "Writes report.md (tables, paired comparisons, findings), report.png and "
    "summary.json from the metrics.jsonl of workdirs."
}
DIRS = "workdirs of lth-jax run; several go on one figure and are compared, paired by trial"
BAND = (
    "the figure's band around the mean over trials: ci (95%% confidence interval of the mean), "
    "std, sem (standard error) or minmax (default: %(default)s)"
)
EXPORT = {
    "description": "Writes one run of a lottery or instability workdir as a sparse model file "
    "(.npz; read it with lth_jax.sparse.load) and prints its size against the dense float32 "
    "weights."
}
WEIGHTS = (
    "trained: as the run ended the round; rewind: as it started it, under its mask "
    "(default: %(default)s)"
)

RUN_OPTIONS = (
    (
        "--config FILE[:ARG]",
        "a Python file whose get_config() (get_config(ARG) with :ARG) returns "
        "the config, or preset:NAME[:ARG], a preset installed with the package (lth-jax "
        "presets); default: the embedded default experiment, IMP on MNIST-1D",
    ),
    (
        "--workdir DIR",
        "results and checkpoints: config.json, metrics.jsonl, report.md, "
        "summary.json, report.png, checkpoints/ (required, except with --print-config)",
    ),
    ("--config.KEY=VALUE", "set one config key (listed below); also --config.KEY VALUE"),
    ("--overwrite", "discard the workdir's earlier run instead of resuming it (default: resume)"),
    (
        "--print-config",
        "print the resolved config (after --config and overrides) as the JSON of "
        "config.json, and exit without running",
    ),
    ("-h, --help", "show this help and exit (with --config FILE: that file's values)"),
)

OVERRIDES = """Overrides are parsed as the key's type: integers, floats, strings, booleans
(true/false; --config.KEY alone for true, --noconfig.KEY for false) and tuples, as a Python
literal (--config.model.kwargs.features="(300,100)", --config.imp.layer_rates="(('head',0.1),)"),
by repeating the flag (--config.arms=ticket --config.arms=reinit) or as comma-separated words
(--config.arms=ticket,reinit). A key whose value is None takes a value of its declared type;
None itself is set in a config file, not on the command line. An unknown key is an error that
names the nearest known key."""


def run_help(usage: str, config, source: str | None) -> str:
    """``lth-jax run --help``: the options, then every key of ``config`` with its value.

    Args:
      usage: the usage line of ``run``.
      config: the config ``run`` would start from (the embedded default, or ``source``'s).
      source: the ``--config`` argument, or ``None`` for the embedded default.
    """
    flat = checks.flatten(config)
    order = {k: i for i, k in enumerate(KEY_MEANINGS)}
    keys = sorted(flat, key=lambda k: (order.get(k, len(order)), k))
    rows = [(f"{k}={format_value(flat[k])}", meaning(k)) for k in keys]
    where = (
        "the embedded default experiment (no --config; presets start from "
        "lth_jax.config.base_config())"
        if source is None
        else f"--config {source}"
    )
    return "\n".join(
        [
            _usage_line(usage, "usage: "),
            "",
            _para(
                "Runs the experiment of a config (its kind: lottery, instability or transfer) "
                "into a workdir and prints its report. Running the same command on the same "
                "workdir resumes it; finished rounds are not repeated."
            ),
            "",
            "options:",
            _rows(RUN_OPTIONS),
            "",
            _para(OVERRIDES),
            "",
            _para(f"config keys (--config.KEY=VALUE), with their values in {where}:"),
            _rows(rows, column=36),
        ]
    )
