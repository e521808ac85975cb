"""The source of a transfer run: pretrained here (``<workdir>/source``) or loaded and checked.

:func:`load_source` pretrains by :func:`lth_jax.lottery.run` in ``source/``
(its own checks and resumption) unless a checked :func:`pretrained_source`
is given: ``transfer.pretrained_workdir``, whose config must describe the
same source as :func:`lth_jax.transfer.config.source_config` (every key but
:data:`SOURCE_FREE_KEYS`), and which must hold the rounds and trials needed.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from lth_jax import checkpoint as ckpt_lib
from lth_jax import config as config_lib
from lth_jax import lottery
from lth_jax import workdir as wd
from lth_jax.transfer.config import has_tickets, source_config
from lth_jax.transfer.surgery import HEAD

__all__ = ["SOURCE_DIR", "SOURCE_FREE_KEYS", "Source", "pretrained_source", "load_source"]

SOURCE_DIR = "source"


class Source:
    """What fine-tuning needs from the source, each with a leading trial axis."""

    def __init__(self, directory, round_, ticket_round, num_trials):
        ck_dir = os.path.join(directory, "checkpoints")
        if not os.path.isdir(ck_dir):
            raise config_lib.ConfigError(f"no checkpoints/ in the source workdir {directory}")
        ck = ckpt_lib.RoundCheckpointer(ck_dir)
        try:
            rounds = ck.rounds()
            need = [round_] + ([ticket_round] if ticket_round is not None else [])
            missing = [r for r in need if r not in rounds]
            if missing:
                raise config_lib.ConfigError(
                    f"the source workdir {directory} has no finished round {missing[0]} "
                    f"(it has {rounds})"
                )
            state, _ = ck.restore(round_)
            trials = jax.tree.leaves(state["ticket"]["params"])[0].shape[0]
            if trials < num_trials:
                raise config_lib.ConfigError(
                    f"num_trials={num_trials} but the source workdir {directory} has only "
                    f"{trials} trials"
                )
            cut = lambda tree: jax.tree.map(lambda a: np.asarray(a)[:num_trials], tree)
            self.directory = directory
            self.round = round_
            self.params = cut(state["ticket"]["params"])
            self.batch_stats = cut(state["ticket"].get("batch_stats") or {})
            self.num_classes = int(np.shape(self.params[HEAD]["kernel"])[-1])
            self.ticket_round = ticket_round
            if ticket_round is not None:
                st, _ = ck.restore(ticket_round)
                self.mask = jax.tree.map(lambda a: a.astype(bool), cut(st["ticket"]["mask"]))
                self.rewind_params = cut(st["rewind"]["params"])
                self.rewind_batch_stats = cut(st["rewind"].get("batch_stats") or {})
        finally:
            ck.close()
        recs = wd.read_jsonl(os.path.join(directory, wd.METRICS))
        self.test_accuracy = {
            int(r["trial"]): r.get("final_test_accuracy")
            for r in recs
            if r.get("round") == round_ and r.get("arm") in ("dense", "ticket")
        }
        self.config = wd.read_json(os.path.join(directory, wd.CONFIG))


def _source_dir(path: str) -> str:
    sub = os.path.join(path, SOURCE_DIR)
    return sub if os.path.isdir(os.path.join(sub, "checkpoints")) else path


#: Keys of a pretrained source's config that may differ from :func:`source_config`'s: none
#: changes the source ticket's weights at the rounds loaded (rounds and trials are checked
#: apart: the source must have them).
SOURCE_FREE_KEYS = (
    *wd.HARMLESS_KEYS,
    *("kind", "arms", "num_trials", "imp.rounds", "checkpoint", "train.eval_every"),
    *("gmp", "pai", "instability"),
)


def _ticket_round(config) -> int | None:
    return int(config.imp.rounds) if has_tickets(config) else None


def pretrained_source(config) -> Source:
    """The source in ``transfer.pretrained_workdir``, checked against ``config``; writes nothing.

    Raises:
      ConfigError: it lacks a round or trials, has no ``config.json``, or trained
        another source than :func:`source_config` describes (model, data,
        training, IMP settings, seed: any key but :data:`SOURCE_FREE_KEYS`; the
        ``imp`` block too when only the dense network of round 0 is loaded).
    """
    tc = config.transfer
    directory = _source_dir(tc.pretrained_workdir)
    src = Source(directory, int(tc.pretrained_round), _ticket_round(config), int(config.num_trials))
    if src.config is None:
        raise config_lib.ConfigError(
            f"transfer.pretrained_workdir {directory} has no {wd.CONFIG}, so its source cannot "
            "be checked against this config"
        )
    dense_only = _ticket_round(config) is None and int(tc.pretrained_round) == 0
    diff = wd.config_diff(
        src.config,
        wd.config_to_json(source_config(config)),
        defaults=wd.config_to_json(config_lib.base_config()),
        harmless=(*SOURCE_FREE_KEYS, "imp") if dense_only else SOURCE_FREE_KEYS,
        upgrade=config_lib.upgrade_json,
    )
    if diff:
        raise config_lib.ConfigError(
            f"transfer.pretrained_workdir {directory} trained another source than this config "
            f"describes: {diff} (its value -> this config's); set these keys to its values, or "
            "leave transfer.pretrained_workdir unset to pretrain here"
        )
    return src


def load_source(config, workdir, overwrite, progress, pretrained=None) -> Source:
    if pretrained is not None:
        return pretrained
    directory = os.path.join(workdir, SOURCE_DIR)
    lottery.run(
        source_config(config), directory, overwrite=overwrite, progress=progress, announce=False
    )
    tc = config.transfer
    return Source(
        directory, int(tc.pretrained_round), _ticket_round(config), int(config.num_trials)
    )
