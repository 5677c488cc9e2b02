"""Fixtures for the real-process integration tests: a 3-node cluster whose logs are printed
when a test fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .cluster import Cluster, running
from .opscluster import OpsCluster


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cluster]:
    """Yields a started 3-node cluster with an agreed leader; stops it afterwards."""
    c = Cluster(tmp_path)
    with running(c, request):
        yield c


@pytest.fixture
def make_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator:
    """Yields ``make(config, n=3)``, which starts an OpsCluster with those server settings
    and waits for a leader; every cluster made is stopped afterwards (logs printed on a
    failure)."""
    made: list[OpsCluster] = []

    def make(config: dict, n: int = 3) -> OpsCluster:
        c = OpsCluster(tmp_path, n, config)
        made.append(c)
        c.start()
        c.wait_for_leader()
        return c

    yield make
    for c in made:
        c.close()
        rep = getattr(request.node, "rep_call", None)
        if rep is None or rep.failed:
            print(c.dump_logs())
