"""The plugin manager and the name registries built from its hooks.

Built-in plugins (``DEFAULT_PLUGINS``) and third-party packages (entry-point group ``ssmdefense``)
are loaded the same way, once per process. Setting ``SSMDEFENSE_LOAD_PLUGINS`` to a comma-separated
list of entry-point names loads only those third-party plugins (empty: none); built-ins always load.
A plugin that fails to import is recorded in ``load_errors()`` (shown by ``ssmdefense plugins``) and
the others keep working.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import pluggy

from . import __version__, hookspecs
from .errors import DuplicateNameError, SSMDefenseError, UnknownNameError

DEFAULT_PLUGINS = (
    "ssmdefense.zoo.s4",
    "ssmdefense.zoo.s4d",
    "ssmdefense.zoo.dss",
    "ssmdefense.zoo.s5",
    "ssmdefense.zoo.mega",
    "ssmdefense.zoo.mamba",
    "ssmdefense.zoo.rnn",
    "ssmdefense.zoo.mlp",
    "ssmdefense.data.embedded",
    "ssmdefense.data.sequences",
    "ssmdefense.data.spoken_digits",
    "ssmdefense.data.speech_commands",
    "ssmdefense.data.urbansound8k",
    "ssmdefense.attacks.fgsm",
    "ssmdefense.attacks.pgd",
    "ssmdefense.attacks.square",
    "ssmdefense.attacks.autoattack",
    "ssmdefense.attacks.cw",
    "ssmdefense.attacks.noise",
    "ssmdefense.attacks.spatial",
    "ssmdefense.attacks.art_spatial",
    "ssmdefense.attacks.snr_pgd",
    "ssmdefense.attacks.time_shift",
    "ssmdefense.attacks.speed",
    "ssmdefense.attacks.pitch_shift",
    "ssmdefense.defenses.none",
    "ssmdefense.defenses.pgd_at",
    "ssmdefense.defenses.ads",
    "ssmdefense.defenses.trades",
    "ssmdefense.defenses.free_at",
    "ssmdefense.defenses.yopo",
    "ssmdefense.defenses.fbf",
    "ssmdefense.defenses.minmax",
    "ssmdefense.defenses.distillation",
    "ssmdefense.defenses.augment",
)
ENTRY_POINT_GROUP = "ssmdefense"
KINDS = ("models", "attacks", "defenses", "datasets", "sequences")
_SINGULAR = {"models": "model", "attacks": "attack", "defenses": "defense", "datasets": "dataset",
             "sequences": "sequence mode"}

_pm: pluggy.PluginManager | None = None
_load_errors: list[dict] = []
_plugin_sources: dict[str, dict] = {}
_registries: dict[str, "Registry"] = {}


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    summary: str
    source: str  # the plugin that registered it


class Registry:
    """Entries of one kind (models, attacks, defenses, datasets) keyed by name."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, factory: Callable, summary: str, source: str) -> None:
        if not isinstance(name, str) or not name:
            raise SSMDefenseError(f"plugin {source!r} registered a {_SINGULAR[self.kind]} with an invalid name {name!r}")
        if not callable(factory):
            raise SSMDefenseError(f"plugin {source!r} registered {_SINGULAR[self.kind]} {name!r} with a factory that is not callable")
        if name in self._entries:
            first = self._entries[name].source
            raise DuplicateNameError(
                f"{_SINGULAR[self.kind]} {name!r} is registered twice: by plugin {first!r} and by plugin {source!r}"
            )
        self._entries[name] = Entry(name, factory, summary or "", source)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names()) or "(none)"
            raise UnknownNameError(f"unknown {_SINGULAR[self.kind]} {name!r}; known: {known}") from None

    def accepted_params(self, name: str) -> list[str] | None:
        """Keyword parameters the factory accepts (None: it takes any ``**kwargs``).

        A class factory is followed up its ``__init__`` chain while each passes ``**kwargs`` on.
        """
        factory = self.get(name).factory
        if getattr(factory, "accepts_unlisted_params", False):
            return None  # it forwards what it does not know (a defense with a base defense)
        inits = [k.__dict__["__init__"] for k in factory.__mro__ if "__init__" in k.__dict__] \
            if inspect.isclass(factory) else [factory]
        names: list[str] = []
        for fn in inits:
            try:
                params = list(inspect.signature(fn).parameters.values())
            except (TypeError, ValueError):
                return None
            names += [p.name for p in params if p.kind is p.KEYWORD_ONLY]
            if not any(p.kind is p.VAR_KEYWORD for p in params):
                return names
        return None

    def create(self, name: str, *args, **params):
        """Call the factory of ``name`` with positional ``args`` and keyword ``params``.

        An unknown keyword, or a value the factory rejects (ValueError/TypeError), becomes an
        ``SSMDefenseError`` naming the entry and, for unknown keywords, listing accepted ones.
        """
        entry = self.get(name)
        what = f"{_SINGULAR[self.kind]} {name!r}"
        accepted = self.accepted_params(name)
        if accepted is not None:
            unknown = sorted(set(params) - set(accepted))
            if unknown:
                raise SSMDefenseError(f"{what} got unknown parameter(s) {', '.join(unknown)}; "
                                      f"accepted: {', '.join(sorted(set(accepted))) or '(none)'}")
        try:
            return entry.factory(*args, **params)
        except SSMDefenseError:
            raise
        except (ValueError, TypeError) as exc:
            raise SSMDefenseError(f"{what}: {exc}") from exc


def _selected_entry_points():
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    wanted = os.environ.get("SSMDEFENSE_LOAD_PLUGINS")
    if wanted is not None:
        names = {n.strip() for n in wanted.split(",") if n.strip()}
        eps = [ep for ep in eps if ep.name in names]
    return eps


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, loading plugins on first use."""
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager("ssmdefense")
        pm.add_hookspecs(hookspecs)
        for module_name in DEFAULT_PLUGINS:
            # A built-in that fails to import is a bug in ssmdefense: let it raise.
            module = importlib.import_module(module_name)
            pm.register(module, name=module_name)
            _plugin_sources[module_name] = {"distribution": "ssmdefense", "version": __version__, "builtin": True}
        for ep in _selected_entry_points():
            dist = getattr(ep, "dist", None)
            dist_name = dist.name if dist is not None else None
            try:
                module = ep.load()
            except Exception as exc:  # a broken third-party plugin must not break the others
                _load_errors.append({
                    "name": ep.name, "value": ep.value, "distribution": dist_name,
                    "version": getattr(dist, "version", None) if dist is not None else None,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                })
                continue
            if pm.is_registered(module):  # the built-ins are also declared as entry points
                continue
            name = ep.name if pm.get_plugin(ep.name) is None else f"{dist_name}:{ep.name}"
            pm.register(module, name=name)
            _plugin_sources[name] = {
                "distribution": dist_name,
                "version": getattr(dist, "version", None) if dist else None,
                "builtin": False,
            }
        _pm = pm
    return _pm


def reset() -> None:
    """Forget loaded plugins and registries (tests; after installing a plugin in-process)."""
    global _pm
    _pm = None
    _load_errors.clear()
    _plugin_sources.clear()
    _registries.clear()


def registry(kind: str) -> Registry:
    """The registry of ``kind`` (one of models, attacks, defenses, datasets), built once."""
    if kind not in KINDS:
        raise ValueError(f"unknown registry kind {kind!r}; known: {', '.join(KINDS)}")
    if kind not in _registries:
        pm = get_plugin_manager()
        reg = Registry(kind)
        hook = getattr(pm.hook, f"register_{kind}")
        # Call each implementation on its own so every entry knows which plugin added it.
        for impl in hook.get_hookimpls():  # registration order: built-ins first
            def register(name, factory, summary="", _source=impl.plugin_name):
                reg.add(name, factory, summary, _source)
            impl.function(register=register)
        _registries[kind] = reg
    return _registries[kind]


def load_errors() -> list[dict]:
    get_plugin_manager()
    return list(_load_errors)


def plugin_info() -> list[dict]:
    """Name, distribution, version and implemented hooks of each loaded plugin, then failures."""
    pm = get_plugin_manager()
    rows = []
    for name, plugin in pm.list_name_plugin():
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        rows.append({"name": name, "hooks": hooks, **_plugin_sources.get(name, {}), "error": None})
    for err in _load_errors:
        rows.append({"name": err["name"], "hooks": [], "distribution": err["distribution"],
                     "version": err["version"], "builtin": False, "error": err["error"]})
    return rows


def add_commands(cli) -> None:
    """Let plugins add click commands to the root group."""
    get_plugin_manager().hook.register_commands(cli=cli)
