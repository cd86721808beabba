"""The lagging search of the `search-lag` assumption (see sitecustomize.py in this folder)."""

import inspect
import os
import re
import time

_TAG_IN_FILTER = re.compile(r"tags\.(?:`([^`]+)`|\"([^\"]+)\"|([A-Za-z0-9_.\-]+))")


def patch(file_store, lag):  # type: ignore[no-untyped-def]
    original = file_store._search_runs
    signature = inspect.signature(original)

    def tag_age(store, run, key):  # type: ignore[no-untyped-def]
        path = os.path.join(store._get_run_dir(run.info.experiment_id, run.info.run_id), "tags", key)
        try:
            return time.time() - os.path.getmtime(path)
        except OSError:
            return float("inf")

    def lagging(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        runs, token = original(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        text = bound.arguments.get("filter_string") or ""
        keys = [next(g for g in m if g) for m in _TAG_IN_FILTER.findall(text)]
        visible = []
        for run in runs:
            if any(tag_age(self, run, key) < lag for key in keys):
                continue  # the index has not seen the tag the filter matched on yet
            for key in [k for k in run.data.tags if tag_age(self, run, k) < lag]:
                run.data._tags.pop(key, None)  # nor does it show a tag set since
            visible.append(run)
        return visible, token

    file_store._search_runs = lagging
