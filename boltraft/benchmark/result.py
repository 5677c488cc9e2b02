"""The result documents the harness writes: building, checking, loading and writing them.

The schema (``boltraft.bench/1``) is documented in docs/benchmarks.md; in short, every file
is one JSON object with ``schema`` (``SCHEMA``), ``kind`` and ``host``:

- ``kind: "disk"``: the output of ``boltraft bench disk --json`` (see ``disk.run_disk_bench``);
- ``kind: "floor"``: the output of ``boltraft bench floor --json`` (see
  ``floor.run_floor_bench``); not one of ``KINDS``, so ``load`` refuses it;
- ``kind: "cluster"`` or ``"sweep"``: ``created``, ``command`` and ``runs``, a list of RUN
  objects, one per (clients, injected fsync delay) point:
  ``label``, ``config`` (the workload and cluster settings), ``elapsed_s``, ``ops_total``,
  ``ops_per_s``, ``errors_total``, ``errors`` (code -> count), ``latency`` (``write``,
  ``read`` and ``all``: latency summaries with ``count``, ``ops_per_s``, ``mean_ms``,
  ``p50_ms``, ``p90_ms``, ``p99_ms``, ``p999_ms``, ``max_ms``, ``cdf`` ([[ms, fraction]...])
  and ``hdr`` (HdrHistogram base64)), and ``stages`` (null or the stage breakdown); a
  ``bench cluster --floor`` document also has ``floor``, the floor result.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any

from boltraft.errors import BadRequestError

SCHEMA = "boltraft.bench/1"
KINDS = ("disk", "cluster", "sweep")
RUN_KEYS = ("label", "config", "elapsed_s", "ops_total", "ops_per_s", "latency")


def host_info() -> dict[str, Any]:
    """Returns the facts about this machine a reader needs to compare results."""
    return {
        "cpus": os.cpu_count() or 1,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def now_iso() -> str:
    """Returns the current UTC time as ISO 8601 with a trailing Z, to the second."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def new_document(kind: str, runs: list[dict[str, Any]], command: str) -> dict[str, Any]:
    """Returns a cluster/sweep document holding ``runs``; raises BadRequestError on a bad kind."""
    if kind not in ("cluster", "sweep"):
        raise BadRequestError(f"a runs document is of kind cluster or sweep, not {kind!r}")
    return {
        "schema": SCHEMA,
        "kind": kind,
        "created": now_iso(),
        "host": host_info(),
        "command": command,
        "runs": runs,
    }


def validate(doc: Any, name: str = "result") -> dict[str, Any]:
    """Returns ``doc`` when it is a result of this schema; raises BadRequestError naming ``name``.

    Checks the envelope and, for cluster/sweep documents, that every run has the ``RUN_KEYS``
    and a ``latency`` map; a disk document must have ``fsync``, ``fdatasync``,
    ``lmdb_commit`` and ``verdict``.
    """
    if not isinstance(doc, dict):
        raise BadRequestError(f"{name}: a result is a JSON object")
    if doc.get("schema") != SCHEMA:
        raise BadRequestError(f"{name}: schema is {doc.get('schema')!r}, expected {SCHEMA!r}")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise BadRequestError(f"{name}: unknown kind {kind!r}")
    if kind == "disk":
        for key in ("fsync", "fdatasync", "lmdb_commit", "verdict"):
            if key not in doc:
                raise BadRequestError(f"{name}: disk result lacks {key!r}")
        return doc
    runs = doc.get("runs")
    if not isinstance(runs, list):
        raise BadRequestError(f"{name}: 'runs' must be a list")
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            raise BadRequestError(f"{name}: run {i} is not an object")
        missing = [k for k in RUN_KEYS if k not in run]
        if missing:
            raise BadRequestError(f"{name}: run {i} lacks {', '.join(missing)}")
        if not isinstance(run["latency"], dict) or not isinstance(run["config"], dict):
            raise BadRequestError(f"{name}: run {i} has a malformed latency or config")
    return doc


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Returns the validated result document in ``path``.

    Raises BadRequestError when the file cannot be read, is not JSON, or is not a result.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadRequestError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise BadRequestError(f"{p}: not a result file (not UTF-8 text)") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise BadRequestError(f"{p}: not JSON: {exc}") from exc
    return validate(doc, str(p))


def write(path: str | os.PathLike[str], doc: dict[str, Any]) -> None:
    """Writes ``doc`` as JSON to ``path`` through a temporary file and a rename, so ``path``
    never holds a partial document."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, p)
