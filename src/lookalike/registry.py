"""A small name -> factory registry, shared by backbones, detectors and index backends.

Modelled on timm's model registry: factories are registered by name, created by
name, and an unknown name raises an error that suggests the closest known names
instead of silently falling back to a default.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Generic, TypeVar

from lookalike.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._descriptions: dict[str, str] = {}

    def register(
        self, name: str, description: str = ""
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            self._descriptions[name] = description or (factory.__doc__ or "").strip().split("\n")[0]
            return factory

        return decorator

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._factories if fnmatch.fnmatch(n, pattern))

    def describe(self) -> dict[str, str]:
        return {n: self._descriptions[n] for n in self.names()}

    def check(self, name: str) -> str:
        if name not in self._factories:
            close = difflib.get_close_matches(name, list(self._factories), n=3, cutoff=0.4)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(self.names())}."
            )
        return name

    def create(self, name: str, **kwargs: object) -> T:
        return self._factories[self.check(name)](**kwargs)
