"""Paper-scale settings by name: ``ssmdefense defend --defense ads --preset ads-mnist`` (or a JSON file
of the same form: ``--preset my-settings.json``). A preset fills the ``RunConfig`` fields the command
line leaves at their defaults; an option given explicitly wins, and ``-m``/``-p``/``-D`` keys given
explicitly override the preset's one by one. ``defense_params`` are per defense: the chosen defense's
entry is used (other defenses train with their own defaults).

- ``ads-mnist`` / ``ads-cifar10``: the AdS paper's setup (Qi et al., NeurIPS 2024, its Appendix C and
  its code's ``train_trades_mnist.py`` / ``train_trades_cifar10.py`` and ``utils/args.py``): pixel
  sequences (784 x 1, 1024 x 3), d_model 128, 2 / 4 layers, AdamW lr 1e-3 with weight decay 2e-4
  and a cosine schedule (the loop's defaults), batch 256, 100 / 180 epochs, eps 0.3 step 0.04 /
  eps 8/255 step 2/255, 10 PGD steps, TRADES beta 1 / 6, FreeAT 4 replays, YOPO 5 x 3, AutoAttack
  on 2,000 test images.
- ``thesis-gtsrb`` / ``thesis-speech-commands``: the min-max thesis's setup (S4 trained by min-max
  robust training; GTSRB traffic signs, Speech Commands digits through the mel front end). Its text
  gives the models, data and defenses but not these numbers: the budgets, sizes and epochs below are
  this toolkit's choice for that setup (GTSRB at 32 x 32 and eps 8/255 as for CIFAR-10; Speech
  Commands at the dataset's default eps, -60 dBFS), stated here so that runs compare.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

from ..errors import OptionError
from .config import RunConfig

_MNIST_ATTACK = {"eps_step": 0.04, "max_iter": 10}
_CIFAR_ATTACK = {"eps_step": 2 / 255, "max_iter": 10}

PRESETS: dict[str, dict] = {
    "ads-mnist": {
        "summary": "AdS paper, MNIST: 784-step pixel sequences, d_model 128, 2 layers, eps 0.3, 100 epochs, batch 256",
        "config": {
            "dataset": "mnist",
            "sequence": "pixels",
            "model": "s4d",
            "model_params": {"d_model": 128, "n_layers": 2},
            "eps": 0.3,
            "epochs": 100,
            "batch_size": 256,
            "aa_samples": 2000,
        },
        "defense_params": {
            "pgd-at": _MNIST_ATTACK,
            "ads": _MNIST_ATTACK,
            "trades": {"beta": 1.0, **_MNIST_ATTACK},
            "free-at": {"replays": 4},
            "yopo": {"m": 5, "n": 3},
        },
    },
    "ads-cifar10": {
        "summary": "AdS paper, CIFAR-10: 1024-step pixel sequences of 3 values, d_model 128, 4 layers, eps 8/255, "
        "180 epochs, batch 256",
        "config": {
            "dataset": "cifar10",
            "sequence": "pixels",
            "model": "s4d",
            "model_params": {"d_model": 128, "n_layers": 4},
            "eps": 8 / 255,
            "epochs": 180,
            "batch_size": 256,
            "aa_samples": 2000,
        },
        "defense_params": {
            "pgd-at": _CIFAR_ATTACK,
            "ads": _CIFAR_ATTACK,
            "trades": {"beta": 6.0, **_CIFAR_ATTACK},
            "free-at": {"replays": 4},
            "yopo": {"m": 5, "n": 3},
        },
    },
    "thesis-gtsrb": {
        "summary": "min-max thesis, GTSRB: 32x32 signs as 32 rows, S4 d_model 128, eps 8/255, 30 epochs, batch 128",
        "config": {
            "dataset": "gtsrb",
            "dataset_params": {"size": 32},
            "sequence": "rows",
            "model": "s4",
            "model_params": {"d_model": 128, "n_layers": 2},
            "eps": 8 / 255,
            "epochs": 30,
            "batch_size": 128,
        },
        "defense_params": {"minmax": {"eps_step": 2 / 255, "max_iter": 10}, "pgd-at": _CIFAR_ATTACK},
    },
    "thesis-speech-commands": {
        "summary": "min-max thesis, Speech Commands digits (all clips, read lazily) through the mel front end, "
        "S4 d_model 128, 20 epochs, batch 128",
        "config": {
            "dataset": "speech-commands",
            "dataset_params": {"subset": "digits", "lazy": True},
            "sequence": "mel",
            "model": "s4",
            "model_params": {"d_model": 128, "n_layers": 2},
            "epochs": 20,
            "batch_size": 128,
            "eval_samples": 2000,
        },
        "defense_params": {},
    },
}


def preset_fields() -> tuple[str, ...]:
    """The RunConfig fields a preset's "config" may set (``config``: the fields marked ``preset``;
    its ``defense_params`` come per defense, beside "config")."""
    return tuple(name for name in RunConfig.names("preset") if name != "defense_params")


FIELDS = preset_fields()


def load_preset(name_or_file: str) -> dict:
    """The preset ``name_or_file``: a built-in name, or a ``.json`` file of the same form
    (``{"config": {...}, "defense_params": {defense: {...}}}``), checked."""
    if name_or_file in PRESETS:
        preset = PRESETS[name_or_file]
    elif name_or_file.endswith(".json"):
        path = Path(name_or_file)
        try:
            preset = json.loads(path.read_text())
        except FileNotFoundError:
            raise OptionError("preset", "--preset", f"{path} does not exist") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise OptionError("preset", "--preset", f"{path} is not a readable JSON file: {exc}") from None
    else:
        raise OptionError(
            "preset", "--preset", f"unknown preset {name_or_file!r}; known: {', '.join(PRESETS)} (or a .json file)"
        )
    if not isinstance(preset, dict) or not isinstance(preset.get("config", {}), dict):
        raise OptionError("preset", "--preset", f"{name_or_file}: expected an object with a 'config' object")
    known = preset_fields()
    unknown = set(preset.get("config", {})) - set(known)
    if unknown:
        raise OptionError(
            "preset",
            "--preset",
            f"{name_or_file}: unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}",
        )
    per_defense = preset.get("defense_params", {})
    if not isinstance(per_defense, dict) or not all(isinstance(v, dict) for v in per_defense.values()):
        raise OptionError("preset", "--preset", f"{name_or_file}: 'defense_params' must map defense names to objects")
    return preset


def apply_preset(preset: dict, given: dict, defense: str) -> dict:
    """``given`` (RunConfig fields: those the user set explicitly, the rest absent) completed by the
    preset; dict-valued fields merge key by key, the user's keys winning."""
    settings = {**preset.get("config", {})}
    settings["defense_params"] = dict(preset.get("defense_params", {}).get(defense, {}))
    for key, value in given.items():
        if isinstance(value, dict):
            settings[key] = {**settings.get(key, {}), **value}
        else:
            settings[key] = value
    return settings


def with_preset(config: RunConfig, preset: str, given: Iterable[str] | None = None) -> RunConfig:
    """``config`` completed by ``preset`` (a name or a JSON file): the fields in ``given`` (the ones
    the user set explicitly; None: those that differ from their defaults) win, and their dicts' keys
    win one by one over the preset's; the preset fills the rest."""
    defaults = RunConfig()
    if given is None:
        given = [name for name in RunConfig.names("preset") if getattr(config, name) != getattr(defaults, name)]
    explicit = {name: getattr(config, name) for name in given if name in RunConfig.names("preset")}
    settings = apply_preset(load_preset(preset), explicit, config.defense)
    return dataclasses.replace(config, **settings, preset=preset)
