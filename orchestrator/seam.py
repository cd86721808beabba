"""The one overridable place that builds each remote client (docs/architecture.md#one-client-factory)."""

from __future__ import annotations

from typing import Generic, TypeVar

F = TypeVar("F")


class Seam(Generic[F]):
    """Holds the factory production code calls; tests put a fake in with `replace` and restore what it returns."""

    def __init__(self, default: F) -> None:
        self.default = default
        self.factory = default

    def replace(self, factory: F | None) -> F:
        """Use `factory` from now on (None: the default again); returns the one it replaces."""
        previous, self.factory = self.factory, factory if factory is not None else self.default
        return previous
