"""The lagging search of the `search-lag` assumption (see sitecustomize.py in this folder)."""

from __future__ import annotations

import inspect
import os
import re
import time
from typing import Any

_TAG_IN_FILTER = re.compile(r"tags\.(?:`([^`]+)`|\"([^\"]+)\"|([A-Za-z0-9_.\-]+))")


def _tag_age(store: Any, run: Any, key: str) -> float:
    path = os.path.join(store._get_run_dir(run.info.experiment_id, run.info.run_id), "tags", key)
    try:
        return time.time() - os.path.getmtime(path)
    except OSError:
        return float("inf")


def patch(file_store: Any, lag: float) -> None:
    original = file_store._search_runs
    signature = inspect.signature(original)

    def lagging(self: Any, *args: Any, **kwargs: Any) -> Any:
        runs, token = original(self, *args, **kwargs)
        text = signature.bind(self, *args, **kwargs).arguments.get("filter_string") or ""
        keys = [next(g for g in match if g) for match in _TAG_IN_FILTER.findall(text)]
        visible = []
        for run in runs:
            if any(_tag_age(self, run, key) < lag for key in keys):
                continue  # the index has not seen the tag the filter matched on yet
            for key in [k for k in run.data.tags if _tag_age(self, run, k) < lag]:
                run.data._tags.pop(key, None)  # nor does it show a tag set since
            visible.append(run)
        return visible, token

    file_store._search_runs = lagging
