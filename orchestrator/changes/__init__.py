"""Change-aware selection (`--changed-since REF`): run only the notebooks a change can affect.

See docs/changes.md for what counts as affecting a notebook and how each reason reads.
"""

from orchestrator.changes.selection import (
    NotSelected,
    Selected,
    Selection,
    apply_selection,
    select_changed,
    select_changed_or_everything,
    unchanged_reason,
)

__all__ = ["NotSelected", "Selected", "Selection", "apply_selection", "select_changed",
           "select_changed_or_everything", "unchanged_reason"]
