"""Loaded by every Python process of an emulated node when the `search-lag` assumption is on (the emulator
puts this folder on PYTHONPATH). It makes MLflow's file store answer `search_runs` from a lagging index: a run
matches a tag filter, and shows a tag, only once that tag has been set for ORCHESTRATOR_EMULATOR_SEARCH_LAG_S
seconds (the tag file's age). `get_run` is not affected. Nothing happens unless mlflow's file store is imported.
"""

import os

_LAG = float(os.environ.get("ORCHESTRATOR_EMULATOR_SEARCH_LAG_S") or 0)

if _LAG > 0:
    import importlib.abc
    import importlib.util
    import sys

    _TARGET = "mlflow.store.tracking.file_store"

    class _Patcher(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
            if name != _TARGET:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None:
                return spec
            original = spec.loader.exec_module

            def exec_module(module):  # type: ignore[no-untyped-def]
                original(module)
                from orchestrator_search_lag import patch  # next to this file

                patch(module.FileStore, _LAG)

            spec.loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    if _TARGET in sys.modules:  # a node forked from a warm parent (warm_nodes.py) may have it already
        from orchestrator_search_lag import patch

        patch(sys.modules[_TARGET].FileStore, _LAG)
    else:
        sys.meta_path.insert(0, _Patcher())
