"""YAML loading that remembers where each key is, so a problem can say "line 12 (notebooks[3].timeout)".

PyYAML's composer already builds a node tree with start marks; we keep that tree next to the plain data
instead of writing a custom constructor, and look positions up by key path only when a problem is reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from orchestrator.plan.messages import Loc, key_path


class YamlSyntaxError(Exception):
    """The text is not valid YAML; `line` and `column` are 1-based (None when PyYAML gives no mark)."""

    def __init__(self, message: str, line: int | None, column: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


@dataclass
class YamlDocument:
    data: Any  # what yaml.safe_load would return
    root: yaml.Node | None
    duplicates: list[tuple[Loc, int]] = field(default_factory=list)  # (key path, line) of repeated keys

    def line_of(self, loc: Loc) -> int | None:
        """1-based line of the deepest node on `loc` (the key's line for a mapping entry)."""
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            found = _child(node, part)
            if found is None:
                break
            key_node, node = found
            line = (key_node or node).start_mark.line + 1
        return line

    def where(self, loc: Loc) -> str:
        """ "line 12 (notebooks[3].timeout)", or the part of it that is known."""
        line = self.line_of(loc)
        path = key_path(loc)
        if line is None:
            return path
        return f"line {line} ({path})" if path else f"line {line}"


def load_yaml(text: str) -> YamlDocument:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        duplicates: list[tuple[Loc, int]] = []
        if root is not None:
            # Before constructing: that flattens `<<` merge keys in place, and a key overriding a merged one
            # is not a duplicate.
            _find_duplicates(root, (), duplicates, set())
        # Constructing in place also means the tree walked by line_of matches the data.
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        message = error.problem or str(error)
        if error.context:
            message += f" ({error.context})"
        if mark is None:
            raise YamlSyntaxError(message, None, None) from None
        raise YamlSyntaxError(message, mark.line + 1, mark.column + 1) from None
    except yaml.YAMLError as error:
        raise YamlSyntaxError(str(error), None, None) from None
    finally:
        loader.dispose()
    return YamlDocument(data=data, root=root, duplicates=duplicates)


def _child(node: yaml.Node | None, part: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
    """(key node or None, value node) for one step of a key path."""
    if isinstance(node, yaml.MappingNode):
        # The last duplicate wins in the data, so it must win here too.
        for key, value in reversed(node.value):
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                return key, value
    elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return None, node.value[part]
    return None


def _find_duplicates(node: yaml.Node, loc: Loc, out: list[tuple[Loc, int]], seen: set[int]) -> None:
    # PyYAML keeps the last of two equal keys without a word; in a plan that hides a setting, so we report it.
    if id(node) in seen:  # anchors and aliases share nodes
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: set[str] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None:
                if name in keys:
                    out.append(((*loc, name), key.start_mark.line + 1))
                keys.add(name)
            _find_duplicates(value, (*loc, name) if name is not None else loc, out, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _find_duplicates(item, (*loc, index), out, seen)
