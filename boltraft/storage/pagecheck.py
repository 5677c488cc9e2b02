"""A check of an LMDB file's page structure that reads the file itself, never through LMDB.

LMDB trusts its pages: a damaged page header (a flipped type bit, a bad ``mp_lower``) makes
it fail an assertion and abort the process, loop, or read past the page, before any
checksum of boltraft's could be looked at. ``check_pages`` walks every B+tree of the file
from the newest valid meta page (the free-page tree, the main tree, and each named sub-DB
the main tree holds) and verifies each page it reaches: its number, its type at its depth,
its header's bounds, each node inside the page, overflow pages, and that the trees' page
and entry counts match their meta records. It reports what it finds and never raises for
a damaged file.

It reads a consistent file only when no process writes it (a stopped node's state store,
or one before the node opens it); it reads each reachable page once, so it takes time in
proportion to the data. The layout is LMDB 0.9's on a 64-bit little-endian machine, the
only one boltraft runs on.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

PAGE_HEADER = 16  # mp_pgno (8), mp_pad (2), mp_flags (2), mp_lower (2), mp_upper (2)
NODE_HEADER = 8  # mn_lo (2), mn_hi (2), mn_flags (2), mn_ksize (2)
P_BRANCH, P_LEAF, P_OVERFLOW, P_META, P_LEAF2 = 0x01, 0x02, 0x04, 0x08, 0x20
_TYPE_BITS = P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_LEAF2
F_BIGDATA, F_SUBDATA, F_DUPDATA = 0x01, 0x02, 0x04
MAGIC = 0xBEEFC0DE
P_INVALID = (1 << 64) - 1  # the root of an empty tree
_HEAD = struct.Struct("<QHHHH")
_NODE = struct.Struct("<HHHH")
# MDB_db: md_pad, md_flags, md_depth, branch / leaf / overflow pages, entries, root page
_DB = struct.Struct("<IHHQQQQQ")
_META = struct.Struct("<IIQQ")  # mm_magic, mm_version, mm_address, mm_mapsize
_META_TAIL = struct.Struct("<QQ")  # mm_last_pg, mm_txnid
MAX_PROBLEMS = 50  # the walk stops after this many


class _Walk:
    """The state of one ``check_pages`` run over an open file."""

    def __init__(self, fd: int, psize: int, last_pg: int) -> None:
        self.fd = fd
        self.psize = psize
        self.last_pg = last_pg
        self.seen: set[int] = set()
        self.problems: list[str] = []

    def page(self, pgno: int, what: str) -> bytes | None:
        """Returns page ``pgno`` once: None (and a problem noted) when it lies past the
        file's last page or was reached before."""
        if not 2 <= pgno <= self.last_pg:
            self.problems.append(f"{what}: page {pgno} is outside pages 2..{self.last_pg}")
            return None
        if pgno in self.seen:
            self.problems.append(f"{what}: page {pgno} is reached twice")
            return None
        self.seen.add(pgno)
        raw = os.pread(self.fd, self.psize, pgno * self.psize)
        if len(raw) < self.psize:
            self.problems.append(f"{what}: page {pgno} is cut short by the end of the file")
            return None
        named = _HEAD.unpack_from(raw)[0]
        if named != pgno:
            self.problems.append(f"{what}: page {pgno}'s header names page {named}")
            return None
        return raw

    def tree(self, record: bytes, what: str) -> None:
        """Walks the tree whose 48-byte MDB_db ``record`` is given and compares its counts."""
        _, _, depth, branches, leaves, overflows, entries, root = _DB.unpack(record)
        counts = [0, 0, 0, 0]  # branch pages, leaf pages, overflow pages, entries
        if root == P_INVALID:
            if entries or depth:
                self.problems.append(f"{what}: an empty tree records {entries} entries")
            return
        if not 1 <= depth <= 64:
            self.problems.append(f"{what}: its depth {depth} is impossible")
            return
        self._node_page(root, 1, depth, counts, what)
        if len(self.problems) >= MAX_PROBLEMS:
            return
        want = [branches, leaves, overflows, entries]
        if counts != want:
            self.problems.append(
                f"{what}: its meta record counts (branch, leaf, overflow pages, entries) "
                f"{tuple(want)} but a walk found {tuple(counts)}"
            )

    def _node_page(self, pgno: int, level: int, depth: int, counts: list[int], what: str) -> None:
        if len(self.problems) >= MAX_PROBLEMS:
            return
        raw = self.page(pgno, what)
        if raw is None:
            return
        _, _, flags, lower, upper = _HEAD.unpack_from(raw)
        leaf = level == depth
        want = P_LEAF if leaf else P_BRANCH
        if flags & _TYPE_BITS != want:
            kind = "leaf" if leaf else "branch"
            self.problems.append(
                f"{what}: page {pgno} at level {level} of {depth} should be a {kind} page "
                f"but its flags are {flags:#06x}"
            )
            return
        psize = self.psize
        if not (PAGE_HEADER <= lower <= upper <= psize and (lower - PAGE_HEADER) % 2 == 0):
            self.problems.append(
                f"{what}: page {pgno}'s header bounds lower={lower} upper={upper} are impossible"
            )
            return
        n = (lower - PAGE_HEADER) // 2
        if n == 0:
            self.problems.append(f"{what}: page {pgno} holds no node")
            return
        counts[1 if leaf else 0] += 1
        offsets = struct.unpack_from(f"<{n}H", raw, PAGE_HEADER)
        if min(offsets) != upper:  # LMDB packs the nodes from mp_upper to the page's end
            self.problems.append(
                f"{what}: page {pgno}'s header says its nodes start at {upper}, "
                f"the first lies at {min(offsets)}"
            )
            return
        for i, at in enumerate(offsets):
            if not upper <= at <= psize - NODE_HEADER:
                self.problems.append(f"{what}: page {pgno} node {i} lies at {at}, outside the page")
                return
            lo, hi, nflags, ksize = _NODE.unpack_from(raw, at)
            data_at = at + NODE_HEADER + ksize
            if not leaf:
                if data_at > psize:
                    self.problems.append(f"{what}: page {pgno} node {i} runs past the page")
                    return
                self._node_page(lo | hi << 16 | nflags << 32, level + 1, depth, counts, what)
                continue
            size = lo | hi << 16
            inline = 8 if nflags & F_BIGDATA else size
            if data_at + inline > psize:
                self.problems.append(f"{what}: page {pgno} node {i} runs past the page")
                return
            counts[3] += 1
            if nflags & F_BIGDATA:
                first = int.from_bytes(raw[data_at : data_at + 8], "little")
                counts[2] += self._overflow(first, size, what)
            elif nflags & F_SUBDATA and not nflags & F_DUPDATA:
                if size != _DB.size:
                    self.problems.append(f"{what}: page {pgno} node {i} is a bad sub-DB record")
                    return
                name = bytes(raw[at + NODE_HEADER : data_at]).decode(errors="replace")
                self.tree(raw[data_at : data_at + size], f"sub-DB {name!r}")

    def _overflow(self, pgno: int, size: int, what: str) -> int:
        """Checks the overflow run at ``pgno`` holding ``size`` bytes; returns its pages."""
        raw = self.page(pgno, what)
        if raw is None:
            return 0
        flags = _HEAD.unpack_from(raw)[2]
        pages = int.from_bytes(raw[12:16], "little")
        if flags & _TYPE_BITS != P_OVERFLOW:
            self.problems.append(f"{what}: page {pgno} should be an overflow page ({flags:#06x})")
            return 0
        if pages < 1 or pgno + pages - 1 > self.last_pg or pages * self.psize - PAGE_HEADER < size:
            self.problems.append(
                f"{what}: overflow page {pgno} claims {pages} pages for {size} bytes"
            )
            return 0
        self.seen.update(range(pgno + 1, pgno + pages))
        return pages


def _meta(fd: int, offset: int) -> tuple[int, int, int, bytes, bytes] | None:
    """Returns (txnid, page size, last page, free tree record, main tree record) of the
    meta page at ``offset``, or None when it is not a valid meta page."""
    raw = os.pread(fd, PAGE_HEADER + _META.size + 2 * _DB.size + _META_TAIL.size, offset)
    if len(raw) < PAGE_HEADER + _META.size + 2 * _DB.size + _META_TAIL.size:
        return None
    flags = _HEAD.unpack_from(raw)[2]
    magic, version, _, _ = _META.unpack_from(raw, PAGE_HEADER)
    if flags & _TYPE_BITS != P_META or magic != MAGIC or version != 1:
        return None
    at = PAGE_HEADER + _META.size
    free, main = raw[at : at + _DB.size], raw[at + _DB.size : at + 2 * _DB.size]
    last_pg, txnid = _META_TAIL.unpack_from(raw, at + 2 * _DB.size)
    psize = _DB.unpack(free)[0]  # LMDB keeps the page size in the free tree's md_pad
    if psize < 512 or psize & (psize - 1):
        return None
    return txnid, psize, last_pg, free, main


def check_pages(path: Path) -> list[str]:
    """Returns the structural problems of the LMDB file ``path`` (``data.mdb``); an empty
    list when every page reachable from its newest valid meta page is sound. A file that
    cannot be read is reported, never raised."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        return [f"cannot read {path}: {exc.strerror}"]
    try:
        first = _meta(fd, 0)
        second = None if first is None else _meta(fd, first[1])
        metas = [m for m in (first, second) if m is not None]
        if not metas:
            return [f"{path}: no valid meta page"]
        _, psize, last_pg, free, main = max(metas, key=lambda m: m[0])
        size = os.fstat(fd).st_size
        if (last_pg + 1) * psize > size:
            return [f"{path}: its meta page names page {last_pg}, past the end of the file"]
        walk = _Walk(fd, psize, last_pg)
        walk.tree(free, "free-page tree")
        walk.tree(main, "main tree")
        return walk.problems[:MAX_PROBLEMS]
    except OSError as exc:
        return [f"cannot read {path}: {exc.strerror}"]
    finally:
        os.close(fd)
