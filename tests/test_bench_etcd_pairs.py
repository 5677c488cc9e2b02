"""``python bench/etcd_pairs.py`` against a stand-in for etcd's benchmark: it alternates
the two, runs the real ``bench/cluster.py``, and prints the ratios it documents."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "etcd_pairs.py"

# prints an etcd_bench.py report whose put p50 is 2 ms at one client, and records its call
FAKE_ETCD = """
import json, sys
from pathlib import Path
Path(sys.argv[0]).with_suffix(".calls").open("a").write(" ".join(sys.argv[1:]) + "\\n")
print(json.dumps({"cluster3": {"wrk": {"c1": {"p50_us": 2000, "ops_per_s": 500.0}}}}))
"""


@pytest.mark.integration
def test_pairs_alternate_and_report_each_ratio(tmp_path: Path) -> None:
    fake = tmp_path / "etcd_bench.py"
    fake.write_text(FAKE_ETCD)
    argv = [sys.executable, str(SCRIPT), "--clients", "1", "--pairs", "2", "--duration", "1"]
    argv += ["--etcd-bench", str(fake)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(out.stdout)
    assert report["clients"] == 1 and report["unit"] == "p50_ms" and not report["secure"]
    assert [p["first"] for p in report["pairs"]] == ["etcd", "boltraft"]
    for p in report["pairs"]:
        assert p["etcd"] == 2.0
        assert 0 < p["boltraft"] < 1000
        assert p["ratio"] == round(p["boltraft"] / 2.0, 3)
    ratios = sorted(p["ratio"] for p in report["pairs"])
    assert report["ratio_min"] == ratios[0] and report["ratio_max"] == ratios[-1]
    calls = fake.with_suffix(".calls").read_text().splitlines()
    assert len(calls) == 2 and all("--conc 1 " in c and "--duration 1" in c for c in calls)


def test_a_missing_etcd_benchmark_is_refused(tmp_path: Path) -> None:
    argv = [sys.executable, str(SCRIPT), "--etcd-bench", str(tmp_path / "none.py")]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2 and "no etcd benchmark" in out.stderr
