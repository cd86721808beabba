"""Which notebooks share an Azure ML node: short notebooks of one target and environment, packed.

Every node pays a start-up (queue, VM, image pull, snapshot, mounts) that is minutes on a real cluster,
however short the notebook. So notebooks expected to run under `pack.under_minutes` (from the run
history, else the plan's `expected_duration`) are packed, in execution order, into nodes of at most
`pack.max_minutes` of expected work, one pack per (target, environment). A packed node runs its notebooks
one after the other with the same step runner (steps/azureml_pack.py).

Never packed: a notebook with no expected duration (no history, none in the plan), `pack: false`, a GPU
target's notebooks unless they say `pack: true`, and anything that would make the graph of nodes cyclic.
A notebook may share a pack with a notebook it runs `after` (it then runs after it inside the node); an
`after` between two nodes stays a data edge from the other node's output for that notebook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator.plan.spec import PackSpec, StepSpec, TargetSpec

PACK_PREFIX = "pack_"


@dataclass
class Node:
    """One node of the compiled pipeline: a single notebook, or a pack of several in running order."""

    steps: list[StepSpec]
    expected_s: float = 0.0
    name: str = ""
    after_nodes: set[int] = field(default_factory=set)  # indexes of the nodes this one takes outputs from

    @property
    def is_pack(self) -> bool:
        return len(self.steps) > 1


@dataclass(frozen=True)
class Packing:
    nodes: list[Node]
    node_of: dict[str, int]  # step id -> index of its node
    overhead_minutes: float

    @property
    def before(self) -> int:
        return len(self.node_of)

    @property
    def after(self) -> int:
        return len(self.nodes)

    @property
    def saved_node_minutes(self) -> float:
        return (self.before - self.after) * self.overhead_minutes

    def summary(self) -> str:
        packs = [node for node in self.nodes if node.is_pack]
        if not packs:
            return (f"packing: {self.before} notebook nodes, none packed (a notebook is packed when its expected "
                    f"duration is known from the run history or the plan's expected_duration)")
        packed = sum(len(node.steps) for node in packs)
        return (f"packing: {self.before} notebook nodes -> {self.after} ({packed} notebooks in {len(packs)} packs); "
                f"about {self.saved_node_minutes:g} node-minutes saved at {self.overhead_minutes:g} min per node "
                f"start (pack.node_overhead_minutes)")


def packable(step: StepSpec, target: TargetSpec, expected: Mapping[str, float], settings: PackSpec) -> bool:
    if step.pack is False or (target.gpus > 0 and step.pack is not True):
        return False
    seconds = expected.get(step.id)
    return seconds is not None and seconds < settings.under_minutes * 60


def pack_steps(steps: Sequence[StepSpec], targets: Mapping[str, TargetSpec], expected: Mapping[str, float],
               settings: PackSpec, *, group_of: Mapping[str, object] | None = None) -> Packing:
    """Nodes for `steps` (in execution order). `group_of`: step id -> what must be equal to share a node
    besides the target (the environment's definition); default the environment name."""
    capacity = settings.max_minutes * 60
    nodes: list[Node] = []
    node_of: dict[str, int] = {}
    open_packs: dict[tuple[str, object], list[int]] = {}
    for step in steps:
        deps = {node_of[dep] for dep in step.after if dep in node_of}
        seconds = expected.get(step.id, 0.0)
        if packable(step, targets[step.target], expected, settings):
            key = (step.target, (group_of or {}).get(step.id, step.environment))
            chosen = next((index for index in open_packs.get(key, [])
                           if nodes[index].expected_s + seconds <= capacity
                           and not any(_reaches(nodes, dep, index) for dep in deps - {index})), None)
            if chosen is not None:
                node = nodes[chosen]
                node.steps.append(step)
                node.expected_s += seconds
                node.after_nodes |= deps - {chosen}
                node_of[step.id] = chosen
                continue
            open_packs.setdefault(key, []).append(len(nodes))
        nodes.append(Node([step], seconds, after_nodes=deps))
        node_of[step.id] = len(nodes) - 1
    _name(nodes)
    return Packing(nodes, node_of, settings.node_overhead_minutes)


def _reaches(nodes: Sequence[Node], start: int, target: int) -> bool:
    """Whether node `start` is, or runs after (transitively), node `target`: adding an edge target <- start
    would then close a cycle."""
    seen: set[int] = set()
    todo = [start]
    while todo:
        index = todo.pop()
        if index == target:
            return True
        if index not in seen:
            seen.add(index)
            todo.extend(nodes[index].after_nodes)
    return False


def _name(nodes: Sequence[Node]) -> None:
    """A single notebook's node keeps its step id (what studio, reuse and the report always used); a pack is
    named after its first notebook, made unique against every step id."""
    taken = {step.id for node in nodes for step in node.steps}
    for index, node in enumerate(nodes):
        if not node.is_pack:
            node.name = node.steps[0].id
            continue
        name = f"{PACK_PREFIX}{index + 1}_{node.steps[0].id}"[:250]
        while name in taken:
            name += "_"
        taken.add(name)
        node.name = name
