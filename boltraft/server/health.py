"""The node's HTTP endpoint for operators (``serve --metrics-addr HOST:PORT``):

- ``GET /metrics``: Prometheus text format (boltraft.server.metrics; docs/operations.md);
- ``GET /healthz``: 200 while the node loop is alive (it ran an iteration within
  ``metrics.HEALTHY_WITHIN_S`` seconds), else 503;
- ``GET /readyz``: 200 while the node can serve linearizable requests: alive, a leader is
  known and heard from, its applied index is within ``metrics.READY_MAX_APPLY_LAG`` entries
  of its commit index, and its disk is not full; else 503.

The health answers are short JSON objects (``{"health": true, ...}``, ``{"ready": false,
"reason": "..."}``). The server runs on its own daemon threads and reads only what the
node loop publishes (``NodeMetrics``).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from boltraft.errors import ConfigError
from boltraft.server.metrics import NodeMetrics

log = logging.getLogger("boltraft.server")


def parse_host_port(addr: str) -> tuple[str, int]:
    """``(host, port)`` of ``HOST:PORT`` (``[::1]:PORT`` for IPv6; port 0: any free one);
    raises ConfigError otherwise."""
    host, sep, port = addr.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"metrics address {addr!r}: expected HOST:PORT", address=addr)
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` of ``metrics`` on ``addr``; serving from
    construction until ``close()``. Raises ConfigError when ``addr`` is malformed or cannot
    be bound."""

    def __init__(self, metrics: NodeMetrics, addr: str) -> None:
        host, port = parse_host_port(addr)
        server_cls = _Server6 if ":" in host else _Server
        try:
            self._httpd = server_cls((host, port), _handler(metrics))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on metrics address {addr}: {exc.strerror or exc}", address=addr
            ) from None
        bound_port = self._httpd.server_address[1]
        self.address = f"{addr.rpartition(':')[0]}:{bound_port}"  # the port chosen for 0
        self.url = f"http://{self.address}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="boltraft-metrics",
            daemon=True,
        )
        self._thread.start()
        log.info("node %s: metrics and health on %s", metrics.node_id, self.url)

    def close(self) -> None:
        """Stops serving and closes the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def _handler(metrics: NodeMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "boltraft"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
            elif path in ("/healthz", "/health"):
                ok, body = metrics.health()
                self._json(200 if ok else 503, body)
            elif path in ("/readyz", "/ready"):
                ok, body = metrics.readiness()
                self._json(200 if ok else 503, body)
            else:
                self._json(404, {"error": "not found: try /metrics, /healthz or /readyz"})

        def do_HEAD(self) -> None:
            self.do_GET()

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = (json.dumps(body, sort_keys=True) + "\n").encode()
            self._send(status, "application/json", data)

        def _send(self, status: int, ctype: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds would drown the node's log

    return Handler
