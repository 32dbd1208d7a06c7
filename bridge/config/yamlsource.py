"""Reading config YAML: the one loader for every config file (``check``, ``serve``, reload, ``route``,
the commands that read only ``server:``, a webhook's ``headers_file``), and YAML paths.

PyYAML's ``safe_load`` keeps the last of two equal keys in a mapping without a word: a second
``oncall:`` receiver silently replaced the first, a second ``routes:`` wiped the routes. The loader
here records every duplicate with both lines instead, and remembers the source text of the unquoted
scalars YAML 1.1 turns into booleans or numbers (``ON``, ``yes``, ``0123``), so that an error about
a string field can say what to quote. This module imports nothing else of bridge.config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["ConfigLoader", "Document", "Duplicate", "YamlPath", "format_path", "read"]

YamlPath = tuple[str | int, ...]  # a YAML path: mapping keys and list indexes

_MERGE = "tag:yaml.org,2002:merge"
_TYPED = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}


def format_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """('routes', 0, 'to') → 'routes[0].to'; the root is '<root>'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


@dataclass(frozen=True)
class Duplicate:
    """A key given twice in one mapping: its YAML path and the lines of both (1-based)."""

    path: YamlPath
    first_line: int
    second_line: int

    def problem(self) -> str:
        lines = (f"on line {self.first_line}" if self.first_line == self.second_line
                 else f"on lines {self.first_line} and {self.second_line}")
        return (f"{format_path(self.path)}: duplicate key, given twice {lines} (only the last would count); "
                "remove or rename one of them")


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that records duplicate keys (``duplicates``) and the source text of plain
    scalars read as a boolean or a number (``scalars``, by YAML path). Merge keys (``<<: *base``)
    work as with SafeLoader: a key of the mapping itself overrides a merged one, which is no
    duplicate."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[Duplicate] = []
        self.scalars: dict[YamlPath, str] = {}
        self._paths: dict[int, YamlPath] = {}
        self._checked: set[int] = set()

    def construct_document(self, node: Node) -> Any:
        self._index(node)
        return super().construct_document(node)

    def _index(self, root: Node) -> None:
        """Each mapping's YAML path, and the typed plain scalars; every node once (an alias reused
        a thousand times is walked once, so a billion-laughs document costs no more here)."""
        seen: set[int] = set()
        stack: list[tuple[Node, YamlPath]] = [(root, ())]
        while stack:
            node, path = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, MappingNode):
                self._paths[id(node)] = path
                # Pushed in reverse, so nodes are visited in document order (an anchor before its aliases).
                for key, value in reversed(node.value):
                    if key.tag == _MERGE:
                        stack.append((value, path))
                    elif isinstance(key, ScalarNode):
                        stack.append((value, (*path, key.value)))
            elif isinstance(node, SequenceNode):
                stack.extend((item, (*path, i)) for i, item in reversed(list(enumerate(node.value))))
            elif isinstance(node, ScalarNode) and node.style is None and node.tag in _TYPED:
                self.scalars[path] = node.value

    def flatten_mapping(self, node: MappingNode) -> None:
        # The first step of constructing every mapping (SafeConstructor.construct_mapping), and the
        # one that copies merged keys in: check the keys as written, before that.
        if id(node) not in self._checked:
            self._checked.add(id(node))
            self._check_keys(node)
        super().flatten_mapping(node)

    def _check_keys(self, node: MappingNode) -> None:
        first: dict[Any, ScalarNode] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE:
                continue
            key = self.construct_object(key_node)
            try:
                earlier = first.setdefault(key, key_node)
            except TypeError:  # unhashable: SafeConstructor reports it
                continue
            if earlier is not key_node:
                self.duplicates.append(Duplicate((*self._paths.get(id(node), ()), key_node.value),
                                                 earlier.start_mark.line + 1, key_node.start_mark.line + 1))


@dataclass
class Document:
    data: Any
    duplicates: list[Duplicate] = field(default_factory=list)
    scalars: dict[YamlPath, str] = field(default_factory=dict)


def read(text: str) -> Document:
    """Parse one YAML document with ConfigLoader. Raises yaml.YAMLError for invalid YAML; duplicate
    keys are returned, not raised, so a caller can report them all (or only those it reads)."""
    loader = ConfigLoader(text)
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    duplicates = sorted(loader.duplicates, key=lambda d: (d.second_line, d.first_line))  # in file order
    return Document(data, duplicates, loader.scalars)
