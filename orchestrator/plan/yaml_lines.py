"""YAML loading that remembers where each key is, so a problem can say "line 12 (notebooks[3].timeout)".

PyYAML's composer already builds a node tree with start marks; we keep that tree next to the plain data
instead of writing a custom constructor, and look positions up by key path only when a problem is reported.

The tree is also where hostile input is stopped before it costs anything: nesting deeper than anyone writes
(PyYAML's composer recurses, so 500 levels is a RecursionError), aliases that expand to a huge or endless
tree (a 300-byte "billion laughs" plan became 19 MB of plan.json), and integers longer than Python's
4,300-digit limit for int(), which PyYAML would raise as a bare ValueError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from orchestrator.plan.messages import Loc, key_path

# Ten levels are plenty for a plan; parameters may nest a little deeper, never a hundred.
MAX_DEPTH = 100
# Nodes of the tree with every alias expanded. A plan without aliases is far under this long before it
# reaches the plan file size cap (loader.MAX_PLAN_BYTES); only alias expansion gets here.
MAX_EXPANDED_NODES = 1_000_000
INT_TAG = "tag:yaml.org,2002:int"
# sys.get_int_max_str_digits()'s default; the digits of a YAML int may carry "_" and a sign.
MAX_INT_DIGITS = 4300


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


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting deeper than MAX_DEPTH (before Python's stack runs out)."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(None, None, f"nesting deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str) -> YamlDocument:
    loader: _BoundedLoader | None = None
    try:
        # Constructing the loader checks the characters: an ESC or NUL is a ReaderError from here.
        loader = _BoundedLoader(text)
        root = loader.get_single_node()
        duplicates: list[tuple[Loc, int]] = []
        if root is not None:
            _check_size(root)
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
    except yaml.reader.ReaderError as error:
        line, column = _position(text, error.position)
        character = repr(chr(error.character)) if isinstance(error.character, int) else repr(error.character)
        raise YamlSyntaxError(f"the character {character} is not allowed in YAML", line, column) from None
    except yaml.YAMLError as error:
        raise YamlSyntaxError(str(error), None, None) from None
    finally:
        if loader is not None:
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


def _position(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a character offset."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _check_size(root: yaml.Node) -> None:
    """Refuse a tree that is recursive, expands (through aliases) past MAX_EXPANDED_NODES, or holds an integer
    Python will not read; raised as a MarkedYAMLError so the caller reports file, line and column.

    Sizes are computed once per node (aliases share nodes), so a bomb costs what its text costs."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    # Iterative post-order walk: the tree may be MAX_DEPTH deep, and each node is entered once.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            if total > MAX_EXPANDED_NODES:
                raise yaml.composer.ComposerError(
                    None, None,
                    f"aliases expand this to more than {MAX_EXPANDED_NODES:,} values; write the values out instead",
                    node.start_mark,
                )
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise yaml.composer.ComposerError(None, None, "an alias refers to a value that contains it", node.start_mark)
        if isinstance(node, yaml.ScalarNode):
            if node.tag == INT_TAG and sum(c.isdigit() for c in node.value) > MAX_INT_DIGITS:
                raise yaml.composer.ComposerError(
                    None, None, f"an integer of more than {MAX_INT_DIGITS} digits", node.start_mark
                )
            sizes[key] = 1
            continue
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []
