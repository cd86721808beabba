"""Bounded cell outputs: a per-cell cap applied while the kernel's messages arrive, and the note that says
what was removed.

A notebook printing a gigabyte must not cost the orchestrator a gigabyte (N of them at `--jobs N` would take
the machine down): outputs over a cell's budget are counted and dropped as they arrive, never stored. Stream
text over the budget is cut, keeping its start and, in a bounded buffer, its end: the last lines of a long
log (the final metrics, the error) are usually what a reader came for.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import nbformat.v4
from nbclient import NotebookClient
from nbformat import NotebookNode

new_output: Callable[..., NotebookNode] = nbformat.v4.new_output

NOTE_PREFIX = "output truncated"
_NOTE_RESERVE = 600  # bytes kept free in a truncated cell for the note about what was removed
_OUTPUT_OVERHEAD = 64  # bytes of JSON around each stored output (its type, name, metadata keys)
_KINDS_LISTED = 4  # kinds of removed output named in the note; more are summed up as "other"


@dataclass
class Removed:
    """What a cell lost to its cap, summed up: never one entry per removed output (200,000 `display()`
    calls must give a note of one line, not 200,000)."""

    stream_bytes: int = 0
    outputs: collections.Counter[str] = field(default_factory=collections.Counter)  # kind -> count
    output_bytes: int = 0

    def __bool__(self) -> bool:
        return bool(self.stream_bytes or self.outputs)

    def add_output(self, output: Mapping[str, Any], size: int) -> None:
        kinds = ", ".join(sorted(output.get("data") or {})) or str(output.get("output_type"))
        self.outputs[f"{output.get('output_type')} ({kinds})"] += 1
        self.output_bytes += size

    def describe(self) -> str:
        parts = [f"{human(self.stream_bytes)} of stream text"] if self.stream_bytes else []
        if self.outputs:
            count = sum(self.outputs.values())
            common = self.outputs.most_common(_KINDS_LISTED)
            listed = [f"{n:,} {kind}" for kind, n in common]
            other = count - sum(n for _, n in common)
            if other:
                listed.append(f"{other:,} of other kinds")
            parts.append(f"{count:,} output{'s' if count > 1 else ''} ({human(self.output_bytes)}: "
                         f"{'; '.join(listed)})")
        return " and ".join(parts)


class CellBudget:
    """One cell's outputs against its limit, as they arrive."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.produced = 0  # bytes the cell produced, kept or not
        self.removed = Removed()
        self.tail: collections.deque[str] = collections.deque()  # the end of the stream text over the cap
        self._tail_bytes = 0
        self._tail_limit = max(0, limit // 4)
        self.tail_name = "stdout"

    def reset(self) -> None:
        """The cell's output was cleared (clear_output): what was removed went with it."""
        self.__init__(self.limit)  # type: ignore[misc]

    def admit(self, msg_type: str, content: dict[str, Any]) -> dict[str, Any] | None:
        """The content to store (possibly cut), or None when the output is dropped."""
        if msg_type == "error":
            return content  # the traceback is what a reader came for: errors always stay
        if msg_type == "stream":
            return self._admit_stream(content)
        size = size_of(content.get("data")) + size_of(content.get("metadata"))
        self.produced += size
        size += _OUTPUT_OVERHEAD
        if self.used + size <= self.limit - _NOTE_RESERVE:
            self.used += size
            return content
        self.removed.add_output({"output_type": msg_type, **content}, size)
        return None

    def _admit_stream(self, content: dict[str, Any]) -> dict[str, Any] | None:
        text = str(content.get("text", ""))
        printed = utf8_len(text)
        self.produced += printed
        size = printed + _escapes(text)  # as stored
        room = self.limit - _NOTE_RESERVE - self._tail_limit - self.used - _OUTPUT_OVERHEAD
        if size <= room:
            self.used += size + _OUTPUT_OVERHEAD
            return content
        head = head_bytes(text, max(0, room))
        head = head_bytes(head, max(0, room - _escapes(head)))  # as stored, escapes included
        self.used += utf8_len(head) + _escapes(head) + _OUTPUT_OVERHEAD
        self._keep_tail(text[len(head):], str(content.get("name", "stdout")))
        return {**content, "text": head} if head else None

    def _keep_tail(self, text: str, name: str) -> None:
        self.removed.stream_bytes += utf8_len(text)
        if name != self.tail_name:  # the kept end is of one stream: the one written last
            self.tail.clear()
            self._tail_bytes = 0
            self.tail_name = name
        # Each piece is at most _tail_limit characters (so at most 4 times as many bytes): a single
        # gigabyte-long message must not be kept whole.
        piece = text[-self._tail_limit :] if self._tail_limit else ""
        self.tail.append(piece)
        self._tail_bytes += utf8_len(piece)
        while self.tail and self._tail_bytes - utf8_len(self.tail[0]) >= self._tail_limit:
            self._tail_bytes -= utf8_len(self.tail.popleft())

    def kept_tail(self) -> str:
        """The end of the stream text that went over the cap: at most a quarter of the limit."""
        text = "".join(self.tail)
        while text and utf8_len(text) + _escapes(text) > self._tail_limit:  # as stored, escapes included
            data = text.encode("utf-8")
            excess = len(data) + _escapes(text) - self._tail_limit
            text = data[excess:].decode("utf-8", errors="ignore")
        start = text.find("\n")
        return text[start + 1 :] if 0 <= start < len(text) - 1 else text  # from the start of a line

    def closing_outputs(self) -> tuple[str, list[NotebookNode]]:
        """The note, and the outputs to append to the cell once it is done: the note and the kept end of the
        stream text. ("", []) when nothing was removed."""
        if not self.removed:
            return "", []
        tail = self.kept_tail()
        self.removed.stream_bytes -= len(tail.encode("utf-8"))
        message = note(self.produced, self.limit, self.removed)
        if tail:
            message += f"; the last {human(len(tail.encode('utf-8')))} of its stream text follow"
        outputs = [new_output("stream", name="stderr", text=f"\n[orchestrator] {message}\n")]
        if tail:
            outputs.append(new_output("stream", name=self.tail_name, text=tail))
        return message, outputs


def note(produced: int, limit: int, removed: Removed) -> str:
    return (f"{NOTE_PREFIX}: this cell produced {human(produced)} of output, over the limit of {human(limit)} "
            f"per cell (output_limit_bytes); removed {removed.describe()}")


class CappedClient(NotebookClient):
    """nbclient's client, with each cell's outputs held to `output_limit` bytes as they arrive."""

    def __init__(self, nb: NotebookNode, *, output_limit: int, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self.output_limit = output_limit
        self.budgets: dict[int, CellBudget] = {}
        self.clear_before_next_output = False  # nbclient sets it when a cell starts; output() reads it

    def budget(self, cell_index: int) -> CellBudget:
        if cell_index not in self.budgets:
            self.budgets[cell_index] = CellBudget(self.output_limit)
        return self.budgets[cell_index]

    def output(self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None,
               cell_index: int) -> NotebookNode | None:
        parent = msg["parent_header"].get("msg_id")
        if self.output_hook_stack[parent]:  # an Output widget captures it: widget state, not this cell
            return super().output(outs, msg, display_id, cell_index)
        budget = self.budget(cell_index)
        if self.clear_before_next_output:  # nbclient is about to clear the cell (clear_output(wait=True))
            budget.reset()
        content = budget.admit(msg["msg_type"], msg["content"])
        if content is None:
            return None
        if content is not msg["content"]:
            msg = {**msg, "content": content}
        return super().output(outs, msg, display_id, cell_index)

    def clear_output(self, outs: list[NotebookNode], msg: dict[str, Any], cell_index: int) -> None:
        super().clear_output(outs, msg, cell_index)
        if not msg["content"].get("wait") and not self.output_hook_stack[msg["parent_header"].get("msg_id")]:
            self.budget(cell_index).reset()

    def close_cells(self) -> list[tuple[int, str]]:
        """Appends the note on what was removed (and the kept end of the stream text) to every cell the cap
        cut; returns (cell index, note) for each. Called once, before the notebook is written, so a cell cut
        short by a timeout gets its note too."""
        notes = []
        for index, budget in sorted(self.budgets.items()):
            message, closing = budget.closing_outputs()
            if closing:
                self.nb.cells[index].outputs.extend(closing)
                notes.append((index, message))
        self.budgets.clear()
        return notes


def size_of(value: Any) -> int:
    """Bytes of `value` as stored in the notebook file (strings as their UTF-8 text)."""
    if value is None:
        return 0
    if isinstance(value, str):
        return utf8_len(value)
    return utf8_len(json.dumps(value, ensure_ascii=False))


def utf8_len(text: str) -> int:
    # str.isascii() is O(1) in CPython: an ASCII text of a gigabyte is not copied just to be measured.
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _escapes(text: str) -> int:
    """Bytes JSON adds to `text` for its usual escapes (newlines above all): a log of short lines would
    otherwise be stored larger than it was counted."""
    return text.count("\n") + text.count('"') + text.count("\\")


def head_bytes(text: str, limit: int) -> str:
    """The longest start of `text` whose UTF-8 form fits in `limit` bytes."""
    if text.isascii():
        return text[:limit]
    return text[:limit].encode("utf-8")[:limit].decode("utf-8", errors="ignore")


def cap_outputs(cells: Iterable[NotebookNode], limit: int) -> list[tuple[int, str]]:
    """Cells whose stored outputs still exceed `limit` bytes when the notebook is written (an
    update_display_data that grew an output, outputs of an Output widget): truncated exactly, with the
    same note. Returns (cell index, note) for each."""
    return [
        (index, _cap_cell(cell, limit))
        for index, cell in enumerate(cells)
        if cell.get("cell_type") == "code" and cell.outputs and size_of(cell.outputs) > limit
    ]


def _cap_cell(cell: NotebookNode, limit: int) -> str:
    total = size_of(cell.outputs)
    kept: list[NotebookNode] = []
    used = 0
    removed = Removed()
    for output in cell.outputs:
        size = size_of(output)
        if output.output_type == "error" or used + size <= limit - _NOTE_RESERVE:
            kept.append(output)  # errors always stay: the traceback is what a reader came for
            used += size
        elif output.output_type == "stream":
            text = str(output.text)
            head = head_bytes(text, max(0, limit - used - size_of({**output, "text": ""}) - _NOTE_RESERVE))
            removed.stream_bytes += utf8_len(text) - utf8_len(head)
            if head:
                kept.append(new_output("stream", name=output.name, text=head))
                used += size_of(kept[-1])
        else:
            removed.add_output(output, size)
    message = note(total, limit, removed)
    kept.append(new_output("stream", name="stderr", text=f"\n[orchestrator] {message}\n"))
    cell.outputs = kept
    return message


def human(size: int) -> str:
    for unit in ("bytes", "KB", "MB"):
        if size < 1000 or unit == "MB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")
