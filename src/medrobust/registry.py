"""One generic registry used for attacks, models, data sets, defences and detectors.

Components are named through registries only: configuration files and the command line refer to a
component by its registered name, never by an import path or an expression.

Example:
    >>> ATTACKS = Registry("attack")
    >>> @ATTACKS.register("fgsm")
    ... def make_fgsm(eps: float = 8 / 255): ...
    >>> ATTACKS.create("fgsm", eps=0.01)
"""

from __future__ import annotations

import builtins
import difflib
import fnmatch
import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """Raised when a name is not registered; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly.
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered component.

    Attributes:
        name: The registered name (lower case, dashes).
        factory: Callable that builds the component from keyword arguments.
        summary: One-line description shown by ``medrobust list``.
        tags: Free-form tags (e.g. ``"classification"``, ``"3d"``).
    """

    name: str
    factory: Callable[..., T]
    summary: str
    tags: tuple[str, ...]


class Registry(Generic[T]):
    """A name -> factory mapping with "did you mean" errors and keyword checking.

    Args:
        kind: What the registry holds, used in error messages ("attack", "model", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, *, summary: str = "", tags: tuple[str, ...] = ()
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that registers ``factory`` under ``name``.

        Raises:
            ValueError: If ``name`` is already registered.
        """
        key = _normalise(name)

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if key in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            doc = summary or (inspect.getdoc(factory) or "").split("\n", 1)[0]
            self._entries[key] = Entry(key, factory, doc, tuple(tags))
            return factory

        return decorator

    def get(self, name: str) -> Entry[T]:
        """Return the entry for ``name``.

        Raises:
            UnknownNameError: If the name is not registered; the message suggests close names.
        """
        key = _normalise(name)
        if key not in self._entries:
            close = difflib.get_close_matches(key, list(self._entries), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} "
                f"Available: {', '.join(sorted(self._entries)) or '(none)'}"
            )
        return self._entries[key]

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the component ``name`` with keyword arguments.

        Raises:
            UnknownNameError: If the name is not registered.
            TypeError: If a keyword argument is not accepted by the component; the message lists
                the accepted ones.
        """
        entry = self.get(name)
        _check_kwargs(self.kind, entry, kwargs)
        return entry.factory(**kwargs)

    def list(self, pattern: str = "*", tag: str | None = None) -> builtins.list[str]:
        """Sorted names matching a shell-style ``pattern`` (and ``tag`` if given)."""
        return sorted(
            n
            for n, e in self._entries.items()
            if fnmatch.fnmatch(n, pattern.lower()) and (tag is None or tag in e.tags)
        )

    def entries(self) -> builtins.list[Entry[T]]:
        """All entries, sorted by name."""
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _normalise(name) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


def _normalise(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a registered name must be a non-empty string, got {name!r}")
    return name.strip().lower().replace("_", "-")


def _check_kwargs(kind: str, entry: Entry[Any], kwargs: dict[str, Any]) -> None:
    try:
        sig = inspect.signature(entry.factory)
    except (TypeError, ValueError):  # builtins without a signature
        return
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [
        n
        for n, p in params.items()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    check_keywords(kind, entry.name, accepted, kwargs)


def check_keywords(kind: str, name: str, accepted: Iterable[str], given: Iterable[str]) -> None:
    """Refuse keywords outside ``accepted``, suggesting the closest accepted one for each.

    A factory that takes ``**kwargs`` but accepts a known set of keywords (a preset that merges
    its defaults with the caller's keywords) sets ``__signature__`` to that set, or calls this.

    Args:
        kind: What the component is ("attack", "model", ...), for the message.
        name: Its registered name.
        accepted: The keywords it takes.
        given: The keywords it was given.

    Raises:
        TypeError: Naming every unknown keyword (with "did you mean") and the accepted ones.
    """
    accepted = list(accepted)
    unknown = [k for k in given if k not in accepted]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, accepted, n=1, cutoff=0.6)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TypeError(
            f"{kind} {name!r} got unexpected parameter(s) {', '.join(hints)}; "
            f"it accepts: {', '.join(accepted) or '(no parameters)'}"
        )
