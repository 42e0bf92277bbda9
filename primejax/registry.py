"""A named table of functions of one kind, so a config selects a piece of the algorithm by string.

Each table holds plain functions sharing a call signature (given in the table's doc). `bind` checks
the option names against the function's keyword-only parameters, so a misspelt config key is an
error naming the key, not a silent default. Users add their own with the `register` decorator.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable


class Registry:
    """A named table of functions of one kind."""

    def __init__(self, kind: str, signature: str):
        self.kind = kind
        self.signature = signature
        self._functions: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[Callable], Callable]:
        """Decorator: files the function under `name` (a name may be filed once)."""

        def add(fn: Callable) -> Callable:
            if name in self._functions:
                raise ValueError(f"{self.kind} {name!r} is already registered (by {self._functions[name].__name__})")
            self._functions[name] = fn
            return fn

        return add

    def get(self, name: str) -> Callable:
        if name not in self._functions:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        return self._functions[name]

    def bind(self, name: str, **options) -> Callable:
        """The function for `name` with its keyword-only options fixed; unknown option names raise."""
        fn = self.get(name)
        accepted = {p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY}
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise ValueError(f"{self.kind} {name!r} takes no option {', '.join(map(repr, unknown))}; "
                             f"its options are: {', '.join(sorted(accepted)) or 'none'}")
        return functools.partial(fn, **options)

    def names(self) -> list[str]:
        return sorted(self._functions)

    def __contains__(self, name: str) -> bool:
        return name in self._functions

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
