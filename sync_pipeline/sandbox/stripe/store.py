"""Storage primitives: ordered indexes by (created, seq), typed collections, the clock and ids.

Lists are newest first and filtered by `created`; keeping each collection (and each secondary
index) as a sorted list of `(created, seq, id)` makes `created[...]` filters and
`starting_after`/`ending_before` cursors bisections instead of scans.
"""

from __future__ import annotations

import hashlib
import time
from bisect import bisect_left, insort
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Entry = tuple[int, int, str]

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_BODY_LENGTH = 24


def base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, rest = divmod(number, 62)
        digits.append(_BASE62[rest])
    return "".join(reversed(digits)).rjust(width, "0")


class IdFactory:
    """`in_` + 24 characters: a tag derived from the seed, then a per-prefix counter.

    The same seed and the same sequence of calls give the same ids; ids of one prefix sort in
    creation order.
    """

    COUNTER_WIDTH = 12

    def __init__(self, seed: int, counters: dict[str, int] | None = None) -> None:
        tag_width = ID_BODY_LENGTH - self.COUNTER_WIDTH
        digest = int.from_bytes(hashlib.sha256(f"stripe-sandbox-{seed}".encode()).digest()[:9], "big")
        self.tag = base62(digest, tag_width)[-tag_width:]
        self.counters: dict[str, int] = dict(counters or {})

    def new(self, prefix: str) -> str:
        count = self.counters.get(prefix, 0) + 1
        self.counters[prefix] = count
        return f"{prefix}_{self.tag}{base62(count, self.COUNTER_WIDTH)}"


class SandboxClock:
    """Wall-clock time, or a frozen instant, or wall-clock plus an offset (`/_sandbox/clock`)."""

    def __init__(self) -> None:
        self.frozen: int | None = None
        self.offset: float = 0.0

    def now(self) -> int:
        if self.frozen is not None:
            return self.frozen
        return int(time.time() + self.offset)

    def freeze(self, instant: int) -> None:
        self.frozen = int(instant)

    def advance(self, seconds: float) -> None:
        if self.frozen is not None:
            self.frozen += int(seconds)
        else:
            self.offset += seconds

    def real(self) -> None:
        self.frozen = None
        self.offset = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"frozen": self.frozen, "offset": self.offset, "now": self.now()}

    def load(self, data: dict[str, Any]) -> None:
        self.frozen = data.get("frozen")
        self.offset = float(data.get("offset", 0.0))


class SortedIndex:
    """Entries `(created, seq, id)` in ascending order."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: Entry) -> None:
        if not self.entries or entry > self.entries[-1]:
            self.entries.append(entry)
        else:
            insort(self.entries, entry)

    def remove(self, entry: Entry) -> None:
        position = bisect_left(self.entries, entry)
        if position < len(self.entries) and self.entries[position] == entry:
            del self.entries[position]

    def position(self, entry: Entry) -> int:
        return bisect_left(self.entries, entry)

    def window(self, gte: int | None, lte: int | None) -> tuple[int, int]:
        low = 0 if gte is None else bisect_left(self.entries, (gte,))
        high = len(self.entries) if lte is None else bisect_left(self.entries, (lte + 1,))
        return low, high


Extractor = Callable[[dict[str, Any]], Any]


@dataclass
class Collection:
    """All objects of one type, by id, with the main and secondary (field = value) indexes.

    Secondary indexes are only for fields that never change after creation (customer, invoice,
    charge, event type, ...), so they never need re-keying.
    """

    kind: str
    extractors: dict[str, Extractor] = field(default_factory=dict)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    entries: dict[str, Entry] = field(default_factory=dict)
    index: SortedIndex = field(default_factory=SortedIndex)
    secondary: dict[str, dict[Any, SortedIndex]] = field(default_factory=dict)

    def add(self, obj: dict[str, Any], created: int, seq: int) -> None:
        object_id = obj["id"]
        entry = (created, seq, object_id)
        self.objects[object_id] = obj
        self.entries[object_id] = entry
        self.index.add(entry)
        for name, extract in self.extractors.items():
            value = extract(obj)
            if value is not None:
                self.add_to_secondary(name, value, entry)

    def add_to_secondary(self, name: str, value: Any, entry: Entry) -> None:
        self.secondary.setdefault(name, {}).setdefault(value, SortedIndex()).add(entry)

    def remove(self, object_id: str) -> dict[str, Any] | None:
        obj = self.objects.pop(object_id, None)
        if obj is None:
            return None
        entry = self.entries.pop(object_id)
        self.index.remove(entry)
        for by_value in self.secondary.values():
            for sub in by_value.values():
                sub.remove(entry)
        return obj

    def get(self, object_id: str) -> dict[str, Any] | None:
        return self.objects.get(object_id)

    def index_for(self, name: str | None = None, value: Any = None) -> SortedIndex:
        if name is None:
            return self.index
        return self.secondary.get(name, {}).get(value) or SortedIndex()

    def newest_first(self, index: SortedIndex | None = None) -> Iterator[dict[str, Any]]:
        entries = (self.index if index is None else index).entries
        for position in range(len(entries) - 1, -1, -1):
            yield self.objects[entries[position][2]]

    def __len__(self) -> int:
        return len(self.objects)
