"""An in-test fake boltraft node made of REAL ZeroMQ sockets: a ROUTER on 127.0.0.1 (random
port) served by a thread, answering each request with whatever a scripted handler returns.

``FakeStore`` is a handler with a tiny in-memory bucket store (for the CLI tests): it speaks
the request and result schemas of docs/protocol.md, nothing more.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import zmq

from boltraft import errors
from boltraft.transport import codec

# handler(request_id, body) -> the frames to send back to the requester ([] drops the
# request; CRASH closes the node's socket at once, as a killed process's kernel would)
Handler = Callable[[int, dict[str, Any]], list[bytes]]
CRASH: list[bytes] = []


def ok(rid: int, result: Any = None) -> bytes:
    """Returns a success "resp" frame."""
    return codec.encode_result(rid, result)


def fail(rid: int, err: errors.BoltraftError) -> bytes:
    """Returns a failed "resp" frame."""
    return codec.encode_error(rid, err)


class FakeNode:
    """Returns a started fake node; ``requests`` records every (request_id, body) received.

    The socket lives in the node's own thread; ``close()`` stops the thread and closes it."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[int, dict[str, Any]]] = []
        self.idents: list[bytes] = []  # the connection (routing id) of each request
        self._ctx = zmq.Context()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.endpoint = ""
        self.failure: BaseException | None = None
        self.crashed = threading.Event()  # the handler returned CRASH: the socket is closed
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake node did not start")

    def _run(self) -> None:
        sock = self._ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self._ready.set()
        try:
            while not self._stop.is_set():
                if not sock.poll(20):
                    continue
                ident, data = sock.recv_multipart()
                try:
                    kind, req = codec.decode_frame(data)
                except errors.ProtocolError:
                    continue
                if kind != "req":
                    continue
                self.requests.append((req.request_id, req.body))
                self.idents.append(ident)
                frames = self.handler(req.request_id, req.body)
                if frames is CRASH:
                    self.crashed.set()
                    return
                for frame in frames:
                    sock.send_multipart([ident, frame])
        except BaseException as exc:  # surfaced by close() so a test cannot pass silently
            self.failure = exc
        finally:
            sock.close(0)

    def bodies(self) -> list[dict[str, Any]]:
        """Returns the bodies received so far."""
        return [body for _, body in self.requests]

    def close(self) -> None:
        """Returns None once the thread stopped; raises what the handler raised, if anything."""
        self._stop.set()
        self._thread.join(10)
        self._ctx.term()
        if self.failure is not None:
            raise self.failure

    def __enter__(self) -> FakeNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FakeStore:
    """A handler: an in-memory bucket store (nested buckets; scans with prefix/range, limit,
    reverse, after-paging). ``fail_with`` makes the next answers errors instead."""

    def __init__(self, page_limit: int = 1000) -> None:
        self.root: dict[bytes, Any] = {}  # name -> dict (a bucket) or bytes (a value)
        self.page_limit = page_limit
        self.fail_with: list[errors.BoltraftError] = []
        self.status = {"id": "n1", "role": "leader", "term": 3, "lead": "n1", "commit": 9}

    def _bucket(self, path: list[bytes], create: bool = False) -> dict[bytes, Any]:
        b = self.root
        for name in path:
            nxt = b.get(name)
            if not isinstance(nxt, dict):
                raise errors.BucketNotFoundError(f"bucket {name!r} not found", bucket=name)
            b = nxt
        return b

    def __call__(self, rid: int, body: dict[str, Any]) -> list[bytes]:
        if self.fail_with:
            return [fail(rid, self.fail_with.pop(0))]
        try:
            return [ok(rid, self._apply(body))]
        except errors.BoltraftError as err:
            return [fail(rid, err)]

    def _apply(self, body: dict[str, Any]) -> Any:
        op = body["op"]
        if op == "status":
            return self.status
        if op == "batch":  # atomic: work on a copy, keep it only if every op succeeds
            saved = copy.deepcopy(self.root)
            try:
                return [self._apply(sub) for sub in body["ops"]]
            except errors.BoltraftError:
                self.root = saved
                raise
        path = body.get("bucket", [])
        if op == "create_bucket":
            parent = self._bucket(path[:-1])
            if path[-1] in parent:
                if body.get("if_not_exists") and isinstance(parent[path[-1]], dict):
                    return None
                raise errors.BucketExistsError(f"bucket {path[-1]!r} exists")
            parent[path[-1]] = {}
            return None
        if op == "delete_bucket":
            parent = self._bucket(path[:-1])
            if not isinstance(parent.get(path[-1]), dict):
                raise errors.BucketNotFoundError(f"bucket {path[-1]!r} not found")
            del parent[path[-1]]
            return None
        if op == "buckets":
            return sorted(k for k, v in self._bucket(path).items() if isinstance(v, dict))
        b = self._bucket(path)
        if op == "put":
            if "if_value" in body and b.get(body["key"]) != body["if_value"]:
                raise errors.ConditionFailedError("condition failed", current=b.get(body["key"]))
            b[body["key"]] = body["value"]
            return None
        if op == "get":
            value = b.get(body["key"])
            return value if isinstance(value, bytes) else None
        if op == "delete":
            return b.pop(body["key"], None) is not None
        if op == "scan":
            return self._scan(b, body)
        raise errors.BadRequestError(f"unknown op {op!r}")

    def _scan(self, b: dict[bytes, Any], body: dict[str, Any]) -> dict[str, Any]:
        keys = sorted(b, reverse=bool(body.get("reverse")))
        prefix, start, end = body.get("prefix"), body.get("start"), body.get("end")
        if prefix is not None:
            keys = [k for k in keys if k.startswith(prefix)]
        if start is not None:
            keys = [k for k in keys if k >= start]
        if end is not None:
            keys = [k for k in keys if k < end]
        after = body.get("after")
        if after is not None:
            keys = [k for k in keys if (k < after if body.get("reverse") else k > after)]
        limit = min(body.get("limit") or self.page_limit, self.page_limit)
        page = keys[:limit]
        more = len(keys) > limit
        items = [[k, b[k] if isinstance(b[k], bytes) else None] for k in page]
        return {"items": items, "next": page[-1] if more else None}
