"""``@frozen``: an immutable value class, as the type checker sees it, that is cheap to build.

``dataclass(frozen=True)`` sets every field through ``object.__setattr__`` (frozen classes refuse
plain assignment), ~6x the cost of a plain slots dataclass: the accept path builds a dozen of these
per event (bench/README.md, "Frozen values"). Here the class is a plain slots dataclass at run time,
hashed by its fields like a frozen one, and frozen for mypy (``dataclass_transform``): CI's strict
mypy run over ``bridge/`` refuses any assignment to a field. Copies go through
``dataclasses.replace`` or the constructor, as before.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar, dataclass_transform

T = TypeVar("T")


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
def frozen(cls: type[T]) -> type[T]:
    return dataclasses.dataclass(slots=True, unsafe_hash=True)(cls)
