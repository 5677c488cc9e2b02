"""``python bench/store.py`` at a tiny scale: it runs and prints every documented key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "store.py"


def test_bench_store_script_prints_every_key(tmp_path: Path) -> None:
    argv = [sys.executable, str(SCRIPT), "--scale", "0.01", "--dir", str(tmp_path)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(out.stdout)
    for b in (1, 10, 100, 1000):
        assert result[f"apply_b{b}_ops_per_s"] > 0
        assert result[f"raw_b{b}_ops_per_s"] > 0
    for key in ("apply_dedup_b100_ops_per_s", "apply_dedup_c64_b25_ops_per_s"):
        assert result[key] > 0
    assert result["throughput_ratio_b100"] > 0 and result["latency_ratio_p50"] > 0
    assert isinstance(result["targets_met"], bool)
    assert list(tmp_path.iterdir()) == []  # the stores are removed afterwards
