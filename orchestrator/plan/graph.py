"""Step ids and execution order.

Ids are slugs of the notebook path so that they stay the same from run to run (rerun, Azure ML reuse) and
are valid Azure ML node names: letters, digits and underscores, not starting with a digit, at most 255.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping, Sequence

MAX_ID_LENGTH = 255


def slug(notebook: str) -> str:
    """ "examples/01 Train.ipynb" -> "examples_01_train"."""
    stem = notebook[: -len(".ipynb")] if notebook.lower().endswith(".ipynb") else notebook
    text = re.sub(r"[^a-z0-9_]+", "_", stem.lower())
    text = re.sub(r"_+", "_", text).strip("_")
    if not text[:1].isalpha():  # also catches "" (a notebook named ".ipynb")
        text = f"nb_{text}".rstrip("_")
    return text[:MAX_ID_LENGTH]


def step_ids(notebooks: Iterable[str]) -> dict[str, str]:
    """notebook -> unique id. Collisions get _2, _3, ... in sorted path order, so ids do not depend on the
    order of the plan, and never take a name another notebook has naturally."""
    paths = sorted(set(notebooks))
    natural = {path: slug(path) for path in paths}
    taken_naturally = set(natural.values())
    ids: dict[str, str] = {}
    used: set[str] = set()
    for path in paths:
        base = natural[path]
        candidate, number = base, 1
        while candidate in used or (candidate != base and candidate in taken_naturally):
            number += 1
            suffix = f"_{number}"
            candidate = base[: MAX_ID_LENGTH - len(suffix)] + suffix
        used.add(candidate)
        ids[path] = candidate
    return ids


class CycleError(Exception):
    def __init__(self, cycles: list[list[str]]) -> None:
        super().__init__(cycles)
        self.cycles = cycles  # each [a, b, ..., a]: a runs after b, ...


def execution_order(nodes: Sequence[str], after: Mapping[str, Iterable[str]]) -> list[str]:
    """`nodes` ordered so each comes after everything in `after[node]`; otherwise in their given order.

    Kahn's algorithm with a heap keyed by position, so independent notebooks keep the plan's order.
    Raises CycleError naming every cycle found.
    """
    position = {node: index for index, node in enumerate(nodes)}
    waiting_on = {node: set(after.get(node, ())) & position.keys() for node in nodes}
    dependents: dict[str, list[str]] = {node: [] for node in nodes}
    for node, needs in waiting_on.items():
        for need in needs:
            dependents[need].append(node)
    remaining = {node: len(needs) for node, needs in waiting_on.items()}
    ready = [position[node] for node in nodes if remaining[node] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        node = nodes[heapq.heappop(ready)]
        order.append(node)
        for dependent in dependents[node]:
            remaining[dependent] -= 1
            if remaining[dependent] == 0:
                heapq.heappush(ready, position[dependent])
    if len(order) < len(nodes):
        stuck = [node for node in nodes if remaining[node] > 0]
        raise CycleError(_cycles(stuck, waiting_on))
    return order


def _cycles(stuck: list[str], waiting_on: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle per knot among the nodes Kahn's algorithm could not order."""
    left = set(stuck)
    cycles: list[list[str]] = []
    while left:
        # Nodes that merely wait on a cycle (without being in one) are dropped first; after that, every
        # node left waits on another node left, so following those links must come back to a node seen.
        pruned = True
        while pruned:
            pruned = False
            for node in [n for n in stuck if n in left]:
                if not waiting_on[node] & left:
                    left.discard(node)
                    pruned = True
        if not left:
            break
        start = next(node for node in stuck if node in left)
        path: list[str] = [start]
        seen = {start: 0}
        while True:
            following = min(waiting_on[path[-1]] & left, key=stuck.index)
            if following in seen:
                cycle = path[seen[following] :] + [following]
                break
            seen[following] = len(path)
            path.append(following)
        cycles.append(cycle)
        left -= set(cycle)
    return cycles


def with_prerequisites(selected: Iterable[str], after: Mapping[str, Iterable[str]]) -> set[str]:
    """`selected` plus, transitively, everything they run after (`--only train.ipynb` keeps prepare too)."""
    keep = set(selected)
    pending = list(keep)
    while pending:
        for need in after.get(pending.pop(), ()):
            if need not in keep:
                keep.add(need)
                pending.append(need)
    return keep
