"""Key encoding of the bucket engine: bucket-id prefixes, argument coercion, paging tokens.

Every bucket has an integer id (the root is 0). Its keys live in ONE LMDB sub-db under the
prefix ``bucket_prefix(id, tag)``: a length byte ``tag + n`` followed by the id in ``n``
big-endian bytes (1 <= n <= 8). The length byte makes the prefixes prefix-free (no bucket's
prefix starts another's), so a bucket's keys form one contiguous, ordered run, and small ids
cost only two bytes. The tag is 0 in stores of formats 3 and 4 (prefixes start with 0x01 to
0x08) and ``HIGH_TAG`` in format 5 (0xf1 to 0xf8: the user data sorts after the sub-db
records of the main db; ``boltraft.storage.layout`` says why).
"""

from __future__ import annotations

from boltraft.errors import (
    InvalidArgumentError,
    InvalidBucketNameError,
    KeyRequiredError,
    KeyTooLargeError,
    ValueTooLargeError,
)

ROOT_ID = 0
"""The id of the root: it holds bucket entries only, never keys."""

PATH_SEP = b"/"
"""Bucket names may not contain this byte: the CLI and messages write paths as ``a/b``."""

TOKEN_VERSION = b"\x01"
"""First byte of every paging token; tokens with another first byte are refused."""


HIGH_TAG = 0xF0
"""The prefix tag of format 5 stores (see the module docstring)."""

MAX_VALUE_SIZE = 1 << 20
"""The largest value a store takes by default (``DB.open``'s ``max_value_size``)."""


def bucket_prefix(bucket_id: int, tag: int = 0) -> bytes:
    """Returns the key prefix of bucket ``bucket_id`` (0 <= id < 2**64) in a store whose
    prefixes carry ``tag`` (0 or HIGH_TAG): length byte ``tag + n``, then the id in ``n``
    big-endian bytes."""
    n = (bucket_id.bit_length() + 7) // 8 or 1
    return bytes((tag + n,)) + bucket_id.to_bytes(n, "big")


def split_prefix(full_key: bytes, tag: int = 0) -> tuple[int, int] | None:
    """Returns ``(bucket_id, prefix_length)`` of a stored key of a store whose prefixes carry
    ``tag``, or None if it is malformed.

    Malformed means the length byte is not ``tag + n`` with 1 <= n <= 8, or the key is
    shorter than it announces (``check()`` reports those).
    """
    if not full_key:
        return None
    n = full_key[0] - tag
    if not 0 < n <= 8 or len(full_key) < 1 + n:
        return None
    return int.from_bytes(full_key[1 : 1 + n], "big"), 1 + n


def prefix_end(prefix: bytes) -> bytes | None:
    """Returns the smallest byte string greater than every string starting with ``prefix``.

    Returns None when there is none (``prefix`` is empty or all 0xff bytes).
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def as_bytes(value: object, what: str) -> bytes:
    """Returns ``value`` as bytes: bytes as is, str UTF-8 encoded, bytearray/memoryview copied.

    Raises InvalidArgumentError for any other type (``what`` names the argument).
    """
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise InvalidArgumentError(
        f"{what} must be bytes or str, not {type(value).__name__}", argument=what
    )


def check_key(key: object, max_len: int, where: str) -> bytes:
    """Returns ``key`` as bytes after checking it is a usable key of at most ``max_len`` bytes.

    Raises KeyRequiredError (empty), KeyTooLargeError (longer than ``max_len``; the message
    says the real maximum for the bucket ``where``), InvalidArgumentError (wrong type).
    """
    if type(key) is not bytes:
        key = as_bytes(key, "key")
    n = len(key)
    if not n:
        raise KeyRequiredError("a key is required (got an empty key)")
    if n > max_len:
        raise KeyTooLargeError(
            f"key of {n} bytes is too large: at most {max_len} bytes fit in bucket {where}",
            size=n,
            max=max_len,
        )
    return key


def check_value(value: object, max_len: int) -> bytes:
    """Returns ``value`` as bytes after checking its size (an empty value is allowed).

    Raises ValueTooLargeError past ``max_len`` bytes, InvalidArgumentError for a wrong type.
    """
    if type(value) is not bytes:
        value = as_bytes(value, "value")
    if len(value) > max_len:
        raise ValueTooLargeError(
            f"value of {len(value)} bytes is too large: at most {max_len} bytes",
            size=len(value),
            max=max_len,
        )
    return value


def check_name(name: object, max_len: int) -> bytes:
    """Returns a bucket name as bytes: 1..``max_len`` bytes without ``/``.

    Raises InvalidBucketNameError otherwise (also for a type other than bytes/str).
    """
    if isinstance(name, str):
        name = name.encode("utf-8")
    elif isinstance(name, bytearray | memoryview):
        name = bytes(name)
    elif not isinstance(name, bytes):
        raise InvalidBucketNameError(
            f"a bucket name must be bytes or str, not {type(name).__name__}"
        )
    if not name:
        raise InvalidBucketNameError("a bucket name must not be empty")
    if PATH_SEP in name:
        raise InvalidBucketNameError(f"a bucket name must not contain '/': {name!r}")
    if len(name) > max_len:
        raise InvalidBucketNameError(
            f"bucket name of {len(name)} bytes is too long: at most {max_len} bytes here",
            size=len(name),
            max=max_len,
        )
    return name


def normalize_path(path: object) -> tuple[object, ...]:
    """Returns a bucket path as a tuple of names (names not yet validated).

    A single bytes/str is a one-name path; a list or tuple is a sequence of names. Raises
    InvalidBucketNameError for an empty path or another type.
    """
    if isinstance(path, bytes | str | bytearray | memoryview):
        names: tuple[object, ...] = (path,)
    elif isinstance(path, tuple | list):
        names = tuple(path)
    else:
        raise InvalidBucketNameError(
            f"a bucket path must be a name or a sequence of names, not {type(path).__name__}"
        )
    if not names:
        raise InvalidBucketNameError("a bucket path must name at least one bucket")
    return tuple(n.encode("utf-8") if isinstance(n, str) else n for n in names)


def show_bytes(b: bytes) -> str:
    """Returns ``b`` for messages: its text when it is UTF-8, undecodable bytes escaped."""
    return b.decode("utf-8", "backslashreplace")


def show_path(path: tuple[bytes, ...]) -> str:
    """Returns a path written ``a/b`` for messages (undecodable bytes escaped)."""
    return "/".join(p.decode("utf-8", "backslashreplace") for p in path) or "/"


def encode_token(last_key: bytes) -> bytes:
    """Returns the opaque paging token that resumes a scan after ``last_key``."""
    return TOKEN_VERSION + last_key


def decode_token(token: object) -> bytes:
    """Returns the key a paging token resumes after.

    Raises InvalidArgumentError when ``token`` was not made by ``encode_token``.
    """
    if not isinstance(token, bytes) or len(token) < 2 or token[:1] != TOKEN_VERSION:
        raise InvalidArgumentError(f"not a paging token: {token!r}", argument="after")
    return token[1:]
