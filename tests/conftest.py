"""Fixtures shared across test modules, registered here once so a test names them as parameters without
importing them. Builders (plain functions) stay in their modules: builders.py, report_builders.py,
history_builders.py, trigger_support.py, azureml_support.py, emulator_support.py, cli_helpers.py."""

import pytest

from tests.conftest_devops import run_dir
from tests.devops_server import devops_server
from tests.emulator_support import emulated_client
from tests.fake_mlclient import fake
from tests.git_server import no_git, test_certs
from tests.trigger_support import fake_ml

__all__ = ["devops_server", "emulated_client", "fake", "fake_ml", "no_git", "run_dir", "test_certs"]


def pytest_configure(config: pytest.Config) -> None:
    """pytest-xdist hands each worker a first chunk of a quarter of its share, in collection order: with the slow
    tests sorted first (below), one worker got all of them and ran 40 s after the others had finished. Chunks of
    two spread them; a worker asks for more as it finishes. An explicit --maxschedchunk wins."""
    if config.pluginmanager.hasplugin("xdist") and config.getoption("maxschedchunk", None) is None:
        config.option.maxschedchunk = 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests (emulated pipelines, many kernels) first: with pytest-xdist, a long test handed out last keeps
    one worker busy after the others have finished. The order is the same in every worker (xdist requires it)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
