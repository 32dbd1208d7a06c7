"""Node ids and globs, for routing's index: literal parts of a glob, and the configured nodes
(the allow-list) sorted for prefix, suffix and substring lookups. Pure."""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from fnmatch import translate
from itertools import islice, takewhile

_GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    """A node pattern with any of ``* ? [`` is a glob (fnmatch, case-sensitive); else an exact id."""
    return not _GLOB_CHARS.isdisjoint(pattern)


def _glob_parts(glob: str) -> list[str | None]:
    """The glob as literal runs (str) and wildcards (None for ``*``, ``?`` or a ``[set]``), read the
    way fnmatch.translate reads it (an unclosed ``[`` is a literal)."""
    parts: list[str | None] = []
    lit: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        i += 1
        if c == "[":
            j = i
            if j < n and glob[j] == "!":
                j += 1
            if j < n and glob[j] == "]":
                j += 1
            while j < n and glob[j] != "]":
                j += 1
            if j >= n:
                lit.append(c)
                continue
            i = j + 1
        elif c not in "*?":
            lit.append(c)
            continue
        if lit:
            parts.append("".join(lit))
            lit = []
        parts.append(None)
    if lit:
        parts.append("".join(lit))
    return parts


def literal_prefix(glob: str) -> str:
    """Every name the glob matches starts with this."""
    parts = _glob_parts(glob)
    return (parts[0] or "") if parts else ""


def literal_suffix(glob: str) -> str:
    """Every name the glob matches ends with this."""
    parts = _glob_parts(glob)
    return (parts[-1] or "") if parts else ""


def longest_literal(glob: str) -> str:
    """The longest text every name the glob matches contains."""
    return max((p for p in _glob_parts(glob) if p), key=len, default="")


RegexCache = dict[str, re.Pattern[str]]


def glob_regex(glob: str, cache: RegexCache) -> re.Pattern[str]:
    rx = cache.get(glob)
    if rx is None:
        rx = cache[glob] = re.compile(translate(glob))
    return rx


def globs_regex(globs: Sequence[str], cache: RegexCache) -> re.Pattern[str] | None:
    """One regex for several globs (compiling is the costly part of compile_routes: share it)."""
    if not globs:
        return None
    if len(globs) == 1:
        return glob_regex(globs[0], cache)
    return re.compile("|".join(translate(g) for g in globs))



# --- the configured nodes ----------------------------------------------------------------------------


class NodeIndex:
    """The configured nodes (the allow-list): ids sorted forwards and by their reversed text (for
    glob prefixes and suffixes), and which nodes carry each label."""

    def __init__(self, nodes: Mapping[str, Mapping[str, str]], regex_cache: RegexCache | None = None) -> None:
        self.regex_cache: RegexCache = {} if regex_cache is None else regex_cache
        self.ids = frozenset(nodes)
        self.sorted_ids = sorted(nodes)
        self.sorted_rev = sorted(n[::-1] for n in nodes)
        self.by_label: dict[tuple[str, str], set[str]] = {}
        self.values: dict[str, set[str]] = {}
        for node_id, labels in nodes.items():
            for item in labels.items():
                self.by_label.setdefault(item, set()).add(node_id)
                self.values.setdefault(item[0], set()).add(item[1])
        self._glob_cache: dict[str, bool] = {}
        self._joined: str | None = None
        self._newline_free = not any("\n" in n for n in self.sorted_ids)

    @staticmethod
    def _starting(ids: list[str], prefix: str) -> Iterable[str]:
        return takewhile(lambda n: n.startswith(prefix), islice(ids, bisect_left(ids, prefix), None))

    @staticmethod
    def _count(ids: list[str], prefix: str) -> int:
        """How many of the sorted ``ids`` start with ``prefix`` (they are contiguous)."""
        start = bisect_left(ids, prefix)
        lo, hi = start, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if ids[mid].startswith(prefix):
                lo = mid + 1
            else:
                hi = mid
        return lo - start

    def count_prefix(self, prefix: str) -> int:
        return self._count(self.sorted_ids, prefix)

    def count_suffix(self, suffix: str) -> int:
        return self._count(self.sorted_rev, suffix[::-1])

    def _containing(self, text: str) -> Iterator[str]:
        """The ids that contain ``text``, found by substring search over all ids at once."""
        joined = self._joined
        if joined is None:
            joined = self._joined = "\n" + "\n".join(self.sorted_ids) + "\n"
        pos = joined.find(text)
        while pos != -1:
            start = joined.rfind("\n", 0, pos) + 1
            end = joined.find("\n", pos)
            yield joined[start:end]
            pos = joined.find(text, end)

    def _candidates(self, glob: str) -> Iterable[str]:
        """Ids that may match ``glob``: a superset of the matches, usually a small one."""
        if prefix := literal_prefix(glob):
            return self._starting(self.sorted_ids, prefix)
        if suffix := literal_suffix(glob):
            return (n[::-1] for n in self._starting(self.sorted_rev, suffix[::-1]))
        text = longest_literal(glob)
        if text and "\n" not in text and self._newline_free:
            return self._containing(text)
        return self.sorted_ids

    def pattern_matches_any(self, pattern: str) -> bool:
        if not is_glob(pattern):
            return pattern in self.ids
        found = self._glob_cache.get(pattern)
        if found is None:
            rx = glob_regex(pattern, self.regex_cache)
            found = any(rx.match(n) for n in self._candidates(pattern))
            self._glob_cache[pattern] = found
        return found
