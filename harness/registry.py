"""Plugin registries: attacks, defenses, benchmarks, scorers (and generation backends).

Built-ins register with a decorator (``@attacks.register("my-attack")``); third-party packages
declare entry points in the groups ``ftsafety.attacks``, ``ftsafety.defenses``,
``ftsafety.benchmarks`` and ``ftsafety.scorers`` whose value is the plugin class.

Registration is cheap by contract: plugin modules import neither torch nor vllm at module
level, so ``ftsafety ls``/``validate``/``plan`` stay fast and work on a laptop.
Built-in modules are imported only when a registry is first queried (lazy, as in
lm-evaluation-harness).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

from ftsafety.harness.errors import UnknownPluginError, UserError

if TYPE_CHECKING:
    from ftsafety.harness.plugins import ReportTable

log = logging.getLogger(__name__)
T = TypeVar("T", bound=type)


class Registry(Generic[T]):
    """A named group of plugin classes, filled by decorators and entry points."""

    def __init__(self, kind: str, group: str, builtin_modules: list[str]) -> None:
        self.kind = kind
        self.group = group
        self._builtin_modules = builtin_modules
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: register ``cls`` under ``name`` and set ``cls.name``."""

        def decorator(cls: T) -> T:
            existing = self._entries.get(name)
            if existing is not None and existing is not cls:
                raise ValueError(f"{self.kind} '{name}' is registered twice ({existing} and {cls})")
            cls.name = name  # type: ignore[attr-defined]
            self._entries[name] = cls
            return cls

        return decorator

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._builtin_modules:
            importlib.import_module(module)
        _import_env_plugins()
        for ep in importlib.metadata.entry_points(group=self.group):
            if ep.name in self._entries:
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # a broken third-party plugin must not break the others
                log.warning("could not load %s plugin %r from %s: %s", self.kind, ep.name, ep.value, exc)
                continue
            if isinstance(obj, type):
                self.register(ep.name)(obj)  # type: ignore[arg-type]

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        self._load()
        for name in sorted(self._entries):
            yield name, self._entries[name]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def get(self, name: str) -> T:
        """The class registered as ``name``; unknown names raise with a suggestion."""
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownPluginError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(self.names())})"
        return f"unknown {self.kind} '{name}'{hint}"


PLUGINS_ENV = "FTSAFETY_PLUGINS"


def _import_env_plugins() -> None:
    """Import the modules named in ``$FTSAFETY_PLUGINS`` (comma-separated): local plugins that
    register with the decorators, without packaging them with entry points."""
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UserError(f"{PLUGINS_ENV}: cannot import plugin module '{module}' ({exc})") from None


attacks: Registry = Registry("attack", "ftsafety.attacks", ["ftsafety.attacks"])
defenses: Registry = Registry("defense", "ftsafety.defenses", ["ftsafety.defenses"])
benchmarks: Registry = Registry("benchmark", "ftsafety.benchmarks", ["ftsafety.evals.benchmarks"])
scorers: Registry = Registry("scorer", "ftsafety.scorers", ["ftsafety.evals.scorers"])
backends: Registry = Registry("generation backend", "ftsafety.backends", ["ftsafety.harness.backends"])

REGISTRIES: dict[str, Registry] = {
    "attacks": attacks,
    "defenses": defenses,
    "benchmarks": benchmarks,
    "scorers": scorers,
}


V = TypeVar("V")


class Extras(Generic[V]):
    """Named values that plugin modules contribute besides their classes (a paper's decoding
    preset, a report table). A plugin module registers them when it is imported; reading them
    imports every plugin module first, as the registries do, so the core never names them."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, V] = {}

    def register(self, name: str, value: V) -> V:
        """Add ``value`` under ``name`` (a name is registered once)."""
        existing = self._entries.get(name)
        if existing is not None and existing != value:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._entries[name] = value
        return value

    def _load(self) -> None:
        for registry in REGISTRIES.values():
            registry._load()

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> V | None:
        """The value registered as ``name``, or None."""
        if name not in self._entries:
            self._load()
        return self._entries.get(name)

    def values(self) -> list[V]:
        """Every registered value, in registration order."""
        self._load()
        return list(self._entries.values())


#: Decoding presets a plugin's paper defines (``generation.preset``), beyond the core ones in
#: ``ftsafety.harness.sampling.PRESETS``: name → ``SamplingParams`` fields.
decoding_presets: Extras[dict[str, float | int]] = Extras("decoding preset")
#: Tables plugins add to report.html (``ftsafety.harness.plugins.ReportTable``), by id.
report_tables: Extras[ReportTable] = Extras("report table")
