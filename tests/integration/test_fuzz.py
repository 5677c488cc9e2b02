"""``python bench/fuzz.py`` against its own live 3-node cluster: 10,000 mutated frames on
each path (client and peer) kill no node, and every node serves the canary keys it held
before, unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "fuzz.py"


@pytest.mark.parametrize("seed", [19])
def test_ten_thousand_fuzzed_frames_per_path_kill_no_node_and_damage_nothing(
    tmp_path: Path, seed: int
) -> None:
    argv = [sys.executable, str(SCRIPT), "--frames", "20000", "--seed", str(seed)]
    argv += ["--keep", str(tmp_path / "cluster")]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(out.stdout)
    assert result["per_path"] == {"client": 10_000, "peer": 10_000}
    assert result["frames_sent"] == 20_000
    assert result["node_exits"] == 0, result["errors"]
    assert result["invariant_failures"] == 0
    assert set(result["rss_growth_mb"]) == {"n1", "n2", "n3"}
    for node in ("n1", "n2", "n3"):
        log = (tmp_path / "cluster" / f"{node}.log").read_text()
        assert "Traceback" not in log, log[-3000:]
