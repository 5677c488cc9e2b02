"""The one error tree of boltraft. Every error has a stable ``code`` that travels over the wire.

    BoltraftError                         code
    ├── StoreError                        (the bucket engine)
    │   ├── KeyRequiredError              key_required
    │   ├── KeyTooLargeError              key_too_large
    │   ├── ValueTooLargeError            value_too_large
    │   ├── InvalidBucketNameError        invalid_bucket_name
    │   ├── BucketNotFoundError           bucket_not_found
    │   ├── KeyNotFoundError              key_not_found
    │   ├── BucketExistsError             bucket_exists
    │   ├── IncompatibleValueError        incompatible_value
    │   ├── ConditionFailedError          condition_failed
    │   ├── SessionExpiredError           session_expired
    │   ├── NoSpaceError                  no_space
    │   ├── TxClosedError                 tx_closed
    │   ├── ReadOnlyTxError               read_only_tx
    │   ├── DataDirLockedError            data_dir_locked
    │   ├── DataDirNotFoundError          data_dir_not_found
    │   ├── InvalidArgumentError          invalid_argument
    │   ├── CorruptionError               corruption
    │   ├── DiskFailedError               disk_failed
    │   └── CopyFailedError               copy_failed
    ├── CommandError                      (state-machine commands)
    │   ├── MalformedCommandError         malformed_command
    │   ├── UnknownCommandError           unknown_command
    │   └── UnsupportedVersionError       unsupported_version
    ├── SnapshotError                     snapshot_error
    │   └── ChecksumMismatchError         checksum_mismatch
    ├── RaftError                         (consensus)
    │   ├── ProposalDroppedError          proposal_dropped
    │   ├── LogCompactedError             log_compacted
    │   └── LogUnavailableError           log_unavailable
    ├── ClusterError                      (the running cluster)
    │   ├── NotLeaderError                not_leader
    │   ├── NoLeaderError                 no_leader
    │   ├── LagExceededError              lag_exceeded
    │   ├── RequestTimeoutError           timeout
    │   ├── UnavailableError              unavailable
    │   ├── NodeRemovedError              node_removed
    │   ├── MembershipError               membership_error
    │   ├── WatchLaggedError              watch_lagged
    │   ├── WatchNotFoundError            watch_not_found
    │   ├── CompactedError                compacted
    │   ├── PermissionDeniedError         permission_denied
    │   └── OverloadedError               overloaded
    ├── ProtocolError                     (the wire)
    │   ├── MalformedFrameError           malformed_frame
    │   ├── FrameTooLargeError            frame_too_large
    │   ├── BadRequestError               bad_request
    │   └── UnsupportedProtocolError      unsupported_protocol
    ├── ConfigError                       config_error   (a node's configuration or data dir)
    └── CliError                          (the boltraft command line, on this machine)
        ├── UsageError                    usage
        ├── MissingExtraError             missing_extra
        ├── LocalFileError                file_error
        ├── SetupFailedError              setup_failed
        └── InterruptedByUserError        interrupted

``to_wire()`` gives ``{"code", "message", "details"}``; ``BoltraftError.from_wire(d)`` rebuilds
the most specific class known for ``code`` (an unknown code becomes a plain ``BoltraftError``
that keeps the code).
"""

from __future__ import annotations

from typing import Any

_BY_CODE: dict[str, type[BoltraftError]] = {}


class BoltraftError(Exception):
    """Base of every error boltraft raises on purpose; ``code`` is stable across versions."""

    code: str = "internal"  # set per class; an error from an unknown code keeps it per instance

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details: dict[str, Any] = details

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        code = cls.__dict__.get("code")
        if code is not None:
            if code in _BY_CODE:
                raise RuntimeError(f"duplicate error code {code!r}")
            _BY_CODE[code] = cls

    def to_wire(self) -> dict[str, Any]:
        """Returns the msgpack-ready form ``{"code", "message", "details"}``."""
        return {"code": self.code, "message": self.message, "details": dict(self.details)}

    @staticmethod
    def from_wire(data: Any) -> BoltraftError:
        """Returns the error a ``to_wire()`` dict describes; never raises on bad input."""
        if not isinstance(data, dict):
            return ProtocolError(f"malformed error payload: {data!r}")
        code = data.get("code")
        message = data.get("message")
        details = data.get("details")
        if not isinstance(message, str):
            message = str(code)
        if not isinstance(details, dict):
            details = {}
        details = {str(k): v for k, v in details.items()}
        cls = _BY_CODE.get(code) if isinstance(code, str) else None
        if cls is None:
            err = BoltraftError(message, **details)
            err.code = str(code)
            return err
        err = cls.__new__(cls)
        BoltraftError.__init__(err, message, **details)
        return err

    def __reduce__(self) -> tuple[Any, ...]:
        return (BoltraftError.from_wire, (self.to_wire(),))


_BY_CODE["internal"] = BoltraftError


# --- the bucket engine -----------------------------------------------------------------------
class StoreError(BoltraftError):
    """An operation on the bucket engine was refused; nothing was written."""


class KeyRequiredError(StoreError):
    code = "key_required"


class KeyTooLargeError(StoreError):
    code = "key_too_large"


class ValueTooLargeError(StoreError):
    code = "value_too_large"


class InvalidBucketNameError(StoreError):
    code = "invalid_bucket_name"


class BucketNotFoundError(StoreError):
    code = "bucket_not_found"


class KeyNotFoundError(StoreError):
    """The key does not exist. The protocol's ``get`` answers nil instead; the CLI's ``get``
    reports this error so scripts can tell a missing key from an empty value."""

    code = "key_not_found"


class BucketExistsError(StoreError):
    code = "bucket_exists"


class IncompatibleValueError(StoreError):
    """A key names a bucket where a value was expected, or a value where a bucket was."""

    code = "incompatible_value"


class ConditionFailedError(StoreError):
    """A conditional put/delete found a different current value (``details["current"]``)."""

    code = "condition_failed"


class SessionExpiredError(StoreError):
    """A retried write (its ``cid`` and ``seq``) was applied too long ago: its result is no
    longer kept, so whether it took effect cannot be told, and it is NOT applied again.
    ``details``: ``cid`` (hex), ``seq``."""

    code = "session_expired"


class NoSpaceError(StoreError):
    """The store reached its size quota; nothing was written, reads are still served."""

    code = "no_space"


class TxClosedError(StoreError):
    code = "tx_closed"


class ReadOnlyTxError(StoreError):
    code = "read_only_tx"


class DataDirLockedError(StoreError):
    code = "data_dir_locked"


class DataDirNotFoundError(StoreError):
    """A read-only open found no bucket store at the given directory."""

    code = "data_dir_not_found"


class InvalidArgumentError(StoreError):
    """An argument has the wrong type or range (a scan bound, a limit, a paging token...)."""

    code = "invalid_argument"


class CorruptionError(StoreError):
    code = "corruption"


class DiskFailedError(StoreError):
    """A node's write or fsync of its own files failed (an I/O error, not a full disk): the
    node stopped, for what it acknowledged could no longer be trusted; restart it once the
    disk is fixed."""

    code = "disk_failed"


class CopyFailedError(StoreError):
    """The child process copying a store failed (see boltraft.storage.copier)."""

    code = "copy_failed"


# --- state-machine commands ------------------------------------------------------------------
class CommandError(BoltraftError):
    """A replicated command could not be decoded; every replica yields the same error."""


class MalformedCommandError(CommandError):
    code = "malformed_command"


class UnknownCommandError(CommandError):
    code = "unknown_command"


class UnsupportedVersionError(CommandError):
    code = "unsupported_version"


# --- snapshots -------------------------------------------------------------------------------
class SnapshotError(BoltraftError):
    code = "snapshot_error"


class ChecksumMismatchError(SnapshotError):
    code = "checksum_mismatch"


# --- consensus -------------------------------------------------------------------------------
class RaftError(BoltraftError):
    """The consensus core refused a request."""


class ProposalDroppedError(RaftError):
    """A proposal was dropped (no leader known, leadership transfer, or not a voter)."""

    code = "proposal_dropped"


class LogCompactedError(RaftError):
    """The requested log index was compacted into a snapshot."""

    code = "log_compacted"


class LogUnavailableError(RaftError):
    """The requested log index is past the last index."""

    code = "log_unavailable"


# --- the running cluster ---------------------------------------------------------------------
class ClusterError(BoltraftError):
    """The cluster could not serve a request right now; usually worth a retry."""


class NotLeaderError(ClusterError):
    """This node is not the leader; ``details`` has ``leader_id`` and ``leader_addr``."""

    code = "not_leader"


class NoLeaderError(ClusterError):
    code = "no_leader"


class LagExceededError(ClusterError):
    code = "lag_exceeded"


class RequestTimeoutError(ClusterError):
    code = "timeout"


class UnavailableError(ClusterError):
    code = "unavailable"


class NodeRemovedError(ClusterError):
    code = "node_removed"


class MembershipError(ClusterError):
    code = "membership_error"


class WatchLaggedError(ClusterError):
    """A watcher fell too far behind the node's newest event (``watch_max_lag`` events) and
    its watch was ended; ``details["index"]``: every matching event up to this index was
    delivered. Watch again from ``index + 1`` (the Python client does)."""

    code = "watch_lagged"


class WatchNotFoundError(ClusterError):
    """A ``watch_ack`` or ``watch_cancel`` names no live watch of this connection on this
    node (it ended, timed out, or the node restarted): watch again from the last index."""

    code = "watch_not_found"


class CompactedError(ClusterError):
    """A watch's start index is older than the oldest change the node retains;
    ``details["oldest_index"]`` is the oldest start index it can serve. Read the current
    state with a ``scan`` and watch from the scan's ``index + 1``."""

    code = "compacted"


class PermissionDeniedError(ClusterError):
    """The client's key does not have the role the request needs (``details["role"]``: the
    key's role, ``details["needs"]``: the role that would do); nothing was changed."""

    code = "permission_denied"


class OverloadedError(ClusterError):
    """The node holds as many bytes of unanswered requests as it takes, or of frames read
    and not yet taken, from this connection or from all of them (``details["limit"]``: the
    budget that was full); the request was not taken in and nothing changed. The client
    retries after a backoff."""

    code = "overloaded"


# --- the wire --------------------------------------------------------------------------------
class ProtocolError(BoltraftError):
    """A frame or request broke the protocol; the server counts it and goes on."""

    code = "protocol_error"


class MalformedFrameError(ProtocolError):
    code = "malformed_frame"


class FrameTooLargeError(ProtocolError):
    code = "frame_too_large"


class BadRequestError(ProtocolError):
    code = "bad_request"


class UnsupportedProtocolError(ProtocolError):
    code = "unsupported_protocol"


# --- configuration ---------------------------------------------------------------------------
class ConfigError(BoltraftError):
    """A node's configuration (flags, config file, node.json) is invalid or contradictory."""

    code = "config_error"


# --- the command line ---------------------------------------------------------------------
class CliError(BoltraftError):
    """A ``boltraft`` command failed on this machine, before or beside talking to a node."""


class UsageError(CliError):
    """The command line is wrong: an unknown option, a missing or malformed argument, or a
    flag that does nothing in its context (``get --max-lag`` without ``--read stale``)."""

    code = "usage"


class MissingExtraError(CliError):
    """The command needs an optional part of the install (``pip install 'boltraft[bench]'``)."""

    code = "missing_extra"


class LocalFileError(CliError):
    """A local file or directory the command reads or writes cannot be used: missing, not
    writable, or not what it should be (``details["path"]``)."""

    code = "file_error"


class SetupFailedError(CliError):
    """A command could not set up what it runs on this machine (``chaos run``: a network
    namespace, link or filtering rule, or a node process); ``details["command"]`` names
    the command that failed, when one did."""

    code = "setup_failed"


class InterruptedByUserError(CliError):
    """The command was interrupted (Ctrl-C)."""

    code = "interrupted"


def error_codes() -> dict[str, type[BoltraftError]]:
    """Returns a copy of the code -> class table (the protocol documents every entry)."""
    return dict(_BY_CODE)
