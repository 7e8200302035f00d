"""The plugin manager and the name registries built from its hooks.

The built-ins (one plugin, ``ssmdefense.builtins``: a table of names, summaries and
``"module:attribute"`` factories, imported on first use) and third-party packages (entry-point group
``ssmdefense``) register through the same hooks, once per process. Setting
``SSMDEFENSE_LOAD_PLUGINS`` to a comma-separated list of entry-point names loads only those
third-party plugins (empty: none); built-ins always load. A plugin that fails to import, or that
implements a hook no spec names (a misspelt ``register_model``), is left out and recorded in
``load_errors()`` (shown by ``ssmdefense plugins``), and the others keep working.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import logging
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

from . import __version__, contracts, hookspecs
from .errors import DuplicateNameError, SSMDefenseError, UnknownNameError

if TYPE_CHECKING:  # the CLI's type, only for annotations
    import click

BUILTIN_PLUGIN = "ssmdefense.builtins"  # the table of every built-in; setup.cfg lists no built-ins
ENTRY_POINT_GROUP = "ssmdefense"
log = logging.getLogger("ssmdefense")
KINDS = ("models", "attacks", "defenses", "datasets", "sequences")
_SINGULAR = {
    "models": "model",
    "attacks": "attack",
    "defenses": "defense",
    "datasets": "dataset",
    "sequences": "sequence mode",
}

_pm: pluggy.PluginManager | None = None
_load_errors: list[dict] = []
_plugin_sources: dict[str, dict] = {}
_registries: dict[str, Registry] = {}


class LazyFactory:
    """A factory named by ``"module:attribute"``, imported on its first use, so that registering
    it (and listing names and summaries) imports nothing. ``source`` is the module's name."""

    def __init__(self, target: str):
        module, _, attribute = target.partition(":")
        if not module or not attribute:
            raise ValueError(f"a lazy factory is named 'module:attribute'; got {target!r}")
        self.target, self.source, self._attribute = target, module, attribute
        self._loaded: Callable[..., Any] | None = None

    def load(self) -> Callable[..., Any]:
        """The factory itself (imports its module the first time)."""
        if self._loaded is None:
            self._loaded = getattr(importlib.import_module(self.source), self._attribute)
        return self._loaded

    def __call__(self, *args, **kwargs):
        return self.load()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"LazyFactory({self.target!r})"


@dataclass(frozen=True)
class Entry:
    """One registered name: its factory (``factory`` loads a lazy one), summary and plugin."""

    name: str
    registered: Callable[..., Any]  # what the plugin passed: a callable or a LazyFactory
    summary: str
    source: str  # the plugin that registered it (a lazy built-in: the module that defines it)

    @property
    def factory(self) -> Callable[..., Any]:
        return self.registered.load() if isinstance(self.registered, LazyFactory) else self.registered


class Registry:
    """Entries of one kind (models, attacks, defenses, datasets, sequences) keyed by name."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, factory: Callable, summary: str, source: str) -> None:
        if isinstance(factory, LazyFactory):
            source = factory.source
        if not isinstance(name, str) or not name:
            raise SSMDefenseError(
                f"plugin {source!r} registered a {_SINGULAR[self.kind]} with an invalid name {name!r}"
            )
        if not callable(factory):
            raise SSMDefenseError(
                f"plugin {source!r} registered {_SINGULAR[self.kind]} {name!r} with a factory that is not callable"
            )
        if isinstance(factory, type):  # a class: its methods can be checked now (a function's product on build)
            contracts.check(factory, contracts.PROTOCOLS[self.kind], f"{_SINGULAR[self.kind]} {name!r}", source)
        if name in self._entries:
            first = self._entries[name].source
            raise DuplicateNameError(
                f"{_SINGULAR[self.kind]} {name!r} is registered twice: by plugin {first!r} and by plugin {source!r}"
            )
        self._entries[name] = Entry(name, factory, summary or "", source)

    def label(self, name: str) -> str:
        """How messages name entry ``name``: "defense 'pgd-at'", "sequence mode 'mel'"."""
        return f"{_SINGULAR[self.kind]} {name!r}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names()) or "(none)"
            failed = [
                f"plugin {e['name']!r} failed to register its {self.kind} ({e['error']})"
                for e in _load_errors
                if e.get("kind") == self.kind
            ]
            more = f"; {'; '.join(failed)}" if failed else ""
            raise UnknownNameError(f"unknown {_SINGULAR[self.kind]} {name!r}; known: {known}{more}") from None

    def accepted_params(self, name: str) -> list[str] | None:
        """Keyword parameters the factory accepts (None: any).

        A factory that declares them ART-style (``defense_params``, as every ``TrainingLoop`` does,
        or ``attack_params``, as every ART attack class does: an ART attack registered as it is
        takes its own keywords) is taken at its word; otherwise its signature (a class's own
        ``__init__``) tells: its keyword-only parameters, or None when it takes ``**kwargs``.
        """
        factory = self.get(name).factory
        for art_style in ("defense_params", "attack_params"):
            declared = getattr(factory, art_style, None)
            if declared is not None:
                return list(dict.fromkeys(declared))
        try:
            params = list(inspect.signature(factory).parameters.values())
        except (TypeError, ValueError):
            return None
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return None
        return [p.name for p in params if p.kind is p.KEYWORD_ONLY]

    def create(self, name: str, *args: Any, **params: Any) -> Any:
        """Call the factory of ``name`` with positional ``args`` and keyword ``params``.

        The registry's own parameter errors (an unknown keyword, arguments that do not fit the
        factory's signature) and a ``ValueError`` from the factory (a value it rejects) become an
        ``SSMDefenseError`` naming the entry, chained to the original. Any other exception from
        inside the factory, ``TypeError`` included, is a bug and propagates with its traceback.
        """
        entry = self.get(name)
        what = self.label(name)
        accepted = self.accepted_params(name)
        if accepted is not None:
            unknown = sorted(set(params) - set(accepted))
            if unknown:
                raise SSMDefenseError(
                    f"{what} got unknown parameter(s) {', '.join(unknown)}; "
                    f"accepted: {', '.join(sorted(set(accepted))) or '(none)'}"
                )
        factory = entry.factory
        try:
            inspect.signature(factory).bind(*args, **params)
        except TypeError as exc:  # the call itself does not fit: our error, not the plugin's
            raise SSMDefenseError(f"{what}: {exc}") from exc
        except ValueError:  # no signature to check (some builtins): let the call tell
            pass
        try:
            return factory(*args, **params)
        except SSMDefenseError:
            raise
        except ValueError as exc:
            raise SSMDefenseError(f"{what}: {exc}") from exc


def _selected_entry_points() -> list:
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
        # the built-ins: a failure to import them is a bug in ssmdefense, so it raises
        pm.register(importlib.import_module(BUILTIN_PLUGIN), name=BUILTIN_PLUGIN)
        _plugin_sources[BUILTIN_PLUGIN] = {"distribution": "ssmdefense", "version": __version__, "builtin": True}
        for ep in _selected_entry_points():
            dist = getattr(ep, "dist", None)
            dist_name = dist.name if dist is not None else None
            try:
                module = ep.load()
            except Exception as exc:  # a broken third-party plugin must not break the others
                _load_errors.append(_entry_error(ep, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
                continue
            if pm.is_registered(module):  # declared twice (under two entry-point names)
                continue
            name = ep.name if pm.get_plugin(ep.name) is None else f"{dist_name}:{ep.name}"
            pm.register(module, name=name)
            # pluggy accepts a hookimpl no spec names (``register_model``) and never calls it; its
            # ``check_pending`` raises for the whole manager. Per plugin instead: a misspelt hook leaves
            # that plugin out, reported like an import failure, and the others keep working.
            unknown = sorted(caller.name for caller in pm.get_hookcallers(module) or () if caller.spec is None)
            if unknown:
                pm.unregister(module)
                message = "; ".join(_unknown_hook(hook) for hook in unknown)
                _load_errors.append(_entry_error(ep, f"PluginValidationError: {message}", ""))
                log.warning("plugin %r is left out: %s", ep.name, message)
                continue
            _plugin_sources[name] = {
                "distribution": dist_name,
                "version": getattr(dist, "version", None) if dist else None,
                "builtin": False,
            }
        _pm = pm
    return _pm


def _entry_error(ep: importlib.metadata.EntryPoint, error: str, trace: str) -> dict:
    """A ``load_errors()`` row for an entry point that could not be loaded."""
    dist = getattr(ep, "dist", None)
    return {
        "name": ep.name,
        "value": ep.value,
        "distribution": dist.name if dist is not None else None,
        "version": getattr(dist, "version", None) if dist is not None else None,
        "error": error,
        "traceback": trace,
    }


def _unknown_hook(hook: str) -> str:
    known = [name for name in dir(hookspecs) if name.startswith("register_")]
    close = difflib.get_close_matches(hook, known, n=1)
    return f"unknown hook {hook!r}" + (f" (did you mean {close[0]!r}?)" if close else f"; hooks: {', '.join(known)}")


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

            def register(name: str, factory: Callable, summary: str = "", _source: str = impl.plugin_name) -> None:
                reg.add(name, factory, summary, _source)

            before = dict(reg._entries)
            try:
                impl.function(register=register)
            except DuplicateNameError:
                raise  # two plugins claim one name: which one is meant cannot be guessed
            except Exception as exc:  # a third-party hook that raises or registers something unusable
                if impl.plugin_name == BUILTIN_PLUGIN:
                    raise  # a bug in ssmdefense itself
                reg._entries = before  # none of this plugin's entries of this kind, the others work
                _load_errors.append(_hook_error(impl.plugin_name, kind, exc))
                log.warning("plugin %r: register_%s failed, its %s are left out: %s", impl.plugin_name, kind, kind, exc)
        _registries[kind] = reg
    return _registries[kind]


def _hook_error(plugin: str, kind: str, exc: Exception) -> dict:
    source = _plugin_sources.get(plugin, {})
    return {
        "name": plugin,
        "value": f"register_{kind}",
        "distribution": source.get("distribution"),
        "version": source.get("version"),
        "kind": kind,
        "error": f"register_{kind}: {type(exc).__name__}: {exc}",
        "traceback": traceback.format_exc(),
    }


def load_errors() -> list[dict]:
    get_plugin_manager()
    return list(_load_errors)


def plugin_info() -> list[dict]:
    """Name, distribution, version and implemented hooks of each loaded plugin (``error``: what its
    hooks raised, if anything), then the plugins that failed to import."""
    pm = get_plugin_manager()
    for kind in KINDS:  # builds every registry (no plugin module is imported): hook failures show
        registry(kind)
    rows = []
    for name, plugin in pm.list_name_plugin():
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        failed = "; ".join(e["error"] for e in _load_errors if e["name"] == name and "kind" in e) or None
        rows.append({"name": name, "hooks": hooks, **_plugin_sources.get(name, {}), "error": failed})
    for err in (e for e in _load_errors if "kind" not in e):
        rows.append(
            {
                "name": err["name"],
                "hooks": [],
                "distribution": err["distribution"],
                "version": err["version"],
                "builtin": False,
                "error": err["error"],
            }
        )
    return rows


def add_commands(cli: click.Group) -> None:
    """Let plugins add click commands to the root group."""
    get_plugin_manager().hook.register_commands(cli=cli)
