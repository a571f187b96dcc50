"""The command line, checked before Hydra composes anything: a mistyped group or key (`schedular=cosine`,
`optimizer.momentun=0.9`) is named with what it likely meant and what the config has, where Hydra would suggest
adding it with `+` (which validation then refuses) or stop with "Key '...' is not in struct"."""

from __future__ import annotations

import argparse
import difflib
import re

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.config.validation import CONF_DIR, own_keys


def _config_names(config_name: str) -> tuple[list[str], list[str]]:
    """The groups the defaults list of `conf/<config_name>.yaml` chooses from, and its top-level keys, following
    defaults entries that name another config file (lr_find.yaml builds on config.yaml)."""
    path = CONF_DIR / f"{config_name}.yaml"
    if not path.is_file():
        return [], []
    content = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    groups, keys = [], [str(key) for key in content if key != "defaults"]
    for entry in content.get("defaults", []):
        if isinstance(entry, dict):
            groups += [str(group).split()[-1].split("@")[0] for group in entry]  # `optional experiment`
        elif entry != "_self_":
            more_groups, more_keys = _config_names(str(entry))
            groups, keys = groups + more_groups, keys + more_keys
    return groups, keys


def override_key_problem(argv: list[str], config_name: str = "config") -> str | None:
    """A command-line override whose key starts with a name the config does not have but is close to one it has
    (`schedular=cosine`): the message with the likely name and the groups, before Hydra composes anything (Hydra
    would suggest adding it with `+`, which validation then refuses). None when every key is known or not close
    to one, when the arguments do not parse (Hydra says why), and for `+key=` additions."""
    parser = get_args_parser()
    parser.exit_on_error = False
    try:
        args, unknown = parser.parse_known_args(argv)
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except (argparse.ArgumentError, HydraException):
        return None
    if unknown:
        return None
    groups, keys = _config_names(args.config_name or config_name)
    known = {*groups, *keys, *(path.name for path in CONF_DIR.iterdir() if path.is_dir()), "hydra"}
    for override in overrides:
        if override.is_add() or override.is_force_add():
            continue
        key = override.key_or_group
        first = re.split(r"[./]", key, maxsplit=1)[0]
        if first in known or not (close := difflib.get_close_matches(first, sorted(known), n=1)):
            continue
        return (
            f"unknown key '{key}': did you mean '{close[0]}{key[len(first) :]}'? The groups are: "
            f"{', '.join(sorted(set(groups)))}; the other top-level keys: {', '.join(sorted(set(keys) - {'hydra'}))}"
        )
    return _unknown_key_problem(overrides, args.config_name or config_name)


def _unknown_key_problem(overrides: list[Override], config_name: str) -> str | None:
    """A `group.key=value` whose group (as the command line chooses it, each choice of a sweep in turn) has no
    such key: the message with the group's keys (Hydra would stop with "Key 'key' is not in struct"). None when
    every key is there, and when the choices do not compose (Hydra says why)."""
    keys = [o for o in overrides if "." in o.key_or_group and not (o.is_add() or o.is_force_add())]
    keys = [o for o in keys if not o.key_or_group.startswith("hydra.")]
    choices = [o for o in overrides if "." not in o.key_or_group and not o.key_or_group.startswith("hydra")]
    first = {o.key_or_group: _lines(o)[0] for o in choices}
    picks = [first, *(first | {o.key_or_group: line} for o in choices for line in _lines(o)[1:])]
    for picked in picks if keys else []:
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name, overrides=list(picked.values()))
        except (HydraException, OmegaConfBaseException):
            return None
        for override in keys:
            group, _, name = override.key_or_group.rpartition(".")
            if isinstance(node := OmegaConf.select(cfg, group), DictConfig) and name not in node:
                return f"{override.key_or_group}: unknown key; {group} has: {own_keys(node, group)}"
    return None


def _lines(override: Override) -> list[str]:
    """The override as the command line writes it, one line per value of a sweep (`a,b`)."""
    if not override.is_sweep_override():
        return [override.input_line]
    return [f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()]
