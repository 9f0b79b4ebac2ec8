"""One generic registry behind every extension point: model families, datasets, claims, alignment methods.

A ``Registry[T]`` maps names to records of one kind (frozen dataclasses with a ``name`` or ``id``).
``register`` adds a record and returns it, so a module registers with one line; called with the
record's other fields instead of a record, it is a decorator in the style of torchvision's
``register_model``: the decorated function becomes the record's function (``make`` builds the record)
and its name defaults to the function's. ``get`` of an unknown name is a one-line ``LewcError``
listing the known ones; ``unregister`` removes a name (tests clean up their toy records with it).

A name may be registered once: registering an equal record again is a no-op (a module imported twice),
a different record under a taken name is a ``ValueError`` (a programming error, not bad input).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from lewc.core.errors import LewcError

T = TypeVar("T")


class Registry(Generic[T]):
    """Records of one ``kind`` by name, in registration order.

    ``key(record)`` is a record's name (default: its ``name`` attribute); ``check(record)`` validates a
    record before it is added (raise ``ValueError``); ``make(function, **fields)`` builds a record for the
    decorator form of ``register``; ``choose`` words the list of known names in an unknown-name error.
    """

    def __init__(
        self,
        kind: str,
        *,
        key: Callable[[T], str] = lambda record: record.name,  # type: ignore[attr-defined]
        check: Callable[[T], None] | None = None,
        make: Callable[..., T] | None = None,
        choose: str = "choose one of",
    ):
        self.kind = kind
        self._key, self._check, self._make, self._choose = key, check, make, choose
        self._records: dict[str, T] = {}

    # --- registering ---------------------------------------------------------------------------------

    def register(self, record: T | None = None, /, **fields: Any) -> Any:
        """Add ``record`` and return it; without a record, a decorator that makes one from a function.

        ``@REGISTRY.register(name="toy", ...)`` on ``def f(...)`` registers ``make(f, name="toy", ...)``
        and returns ``f`` unchanged (the record is ``REGISTRY.get("toy")``).
        """
        if record is not None:
            if fields:
                raise TypeError(f"register a {self.kind} record or its fields, not both")
            return self._add(record)
        if self._make is None:
            raise TypeError(f"the {self.kind} registry takes records only (no decorator form)")

        def decorator(function: Callable) -> Callable:
            self._add(self._make(function, **fields))
            return function

        return decorator

    def _add(self, record: T) -> T:
        name = self._key(record)
        if name in self._records and self._records[name] != record:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if self._check is not None:
            self._check(record)
        self._records[name] = record
        return record

    def unregister(self, name: str) -> None:
        """Remove ``name`` (nothing happens for a name that is not registered)."""
        self._records.pop(name, None)

    # --- looking up ----------------------------------------------------------------------------------

    def get(self, name: str) -> T:
        """The record of ``name``; an unknown name is a one-line ``LewcError`` listing the known ones."""
        try:
            return self._records[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name
            raise LewcError(self.unknown(name)) from None

    def unknown(self, name: Any) -> str:
        """The one-line message for an unknown ``name`` (``name`` as ``repr`` shows it)."""
        return f"unknown {self.kind} {name!r}; {self._choose} {', '.join(self._records)}"

    def names(self) -> list[str]:
        return list(self._records)

    def values(self) -> list[T]:
        return list(self._records.values())

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._records
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._records))

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._records)})"
