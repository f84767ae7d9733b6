"""Name -> class registries for the core's parts (kinds, models, learners, mixers).

Every registered class owns its hyperparameters as keyword arguments of its constructor; `build` checks the
given options against them, so an option a part does not have is an error, never silently dropped
(a mixer "none" has no α/β).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "option_names", "option_defaults"]

T = TypeVar("T")


_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _options(cls: type) -> list[inspect.Parameter]:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # without self
    return [p for p in params if p.kind in _NAMED]


def option_names(cls: type) -> tuple[str, ...]:
    """The hyperparameters of a registered class: its constructor's named arguments (positional-only ones,
    such as a learner's model and task kind, are what it is built on, not options)."""
    return tuple(p.name for p in _options(cls))


def option_defaults(cls: type) -> dict[str, Any]:
    """Defaults of the hyperparameters that have one."""
    return {p.name: p.default for p in _options(cls) if p.default is not inspect.Parameter.empty}


class Registry(Generic[T]):
    """Classes of one part (`what`: "learner", "mixer", ...) by their `name` attribute."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: register `cls` under `cls.name` (a duplicate name is an error)."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.what} registry: {cls.__name__} has no name")
        if name in self._classes and self._classes[name] is not cls:
            raise ValueError(f"{self.what} registry: name {name!r} is taken by {self._classes[name].__name__}")
        self._classes[name] = cls
        return cls

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self):
        return iter(sorted(self._classes))

    def __len__(self) -> int:
        return len(self._classes)

    def __getitem__(self, name: str) -> type[T]:
        return self.get(name)

    def keys(self):
        return sorted(self._classes)

    def items(self):
        return [(k, self._classes[k]) for k in sorted(self._classes)]

    def get(self, name: str) -> type[T]:
        if name not in self._classes:
            raise ValueError(f"unknown {self.what} {name!r}; choose from {sorted(self._classes)}")
        return self._classes[name]

    def check_options(self, name: str, options: dict[str, Any]) -> None:
        """ValueError naming every option `name` does not have."""
        allowed = option_names(self.get(name))
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(f"{self.what} {name!r} has no option(s) {', '.join(unknown)}"
                             f" (its options: {', '.join(allowed) or 'none'})")

    def build(self, name: str, *args: Any, **options: Any) -> T:
        """An instance of `name` with the given options (checked first)."""
        self.check_options(name, options)
        factory: Callable[..., T] = self.get(name)
        return factory(*args, **options)
