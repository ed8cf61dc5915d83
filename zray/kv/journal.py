"""The kv service's memory across restarts: an append-only log plus snapshots.

::

    op_put / op_delete ──► record(key, value) ──► <session>/kv.journal   (appended)
    every COMPACT_RECORDS records ──► snapshot: <session>/kv.snapshot (whole dict,
                                       written aside, renamed into place), log emptied
    start ──► load(): snapshot, then the log replayed over it (a torn last record,
              from a kill mid-write, is dropped)

- Only durable keys are kept: heartbeats (``put_ttl``) are re-sent by their
  nodes every fraction of a second, and timeline events are not worth a
  write per task.
- Records are msgpack (plain data: the kv service unpickles nothing),
  written with one ``write(2)`` each, unsynced: they survive a
  killed kv process (the kernel has them), not a power cut.
"""
import logging
import os
import struct

from ..transport.wire_types import decode, encode

log = logging.getLogger("zray.kv")

COMPACT_RECORDS = 10_000
_LENGTH = struct.Struct("<I")


class Journal:
    def __init__(self, directory):
        self.log_path = os.path.join(directory, "kv.journal")
        self.snapshot_path = os.path.join(directory, "kv.snapshot")
        self.records = 0
        self.fd = None

    def load(self):
        """The dict the journal describes (empty the first time)."""
        data = {}
        try:
            with open(self.snapshot_path, "rb") as f:
                data = decode(f.read())
        except FileNotFoundError:
            pass
        except Exception as exc:         # a damaged snapshot: start from the log alone
            log.error("kv snapshot %s unreadable (%s); using the log only",
                      self.snapshot_path, exc)
        replayed = 0
        try:
            with open(self.log_path, "rb") as f:
                blob = f.read()
        except FileNotFoundError:
            blob = b""
        offset = 0
        while offset + _LENGTH.size <= len(blob):
            (length,) = _LENGTH.unpack_from(blob, offset)
            body = blob[offset + _LENGTH.size:offset + _LENGTH.size + length]
            if len(body) < length:
                break                    # torn by a kill mid-write
            try:
                key, value, deleted = decode(body)
            except Exception:
                break
            if deleted:
                data.pop(key, None)
            else:
                data[key] = value
            replayed += 1
            offset += _LENGTH.size + length
        if data or replayed:
            log.info("kv state restored: %d keys (%d log records)", len(data), replayed)
        self._compact(data)              # start the new log empty, torn tail gone
        return data

    def record(self, key, value, deleted=False):
        body = encode((key, value, deleted))
        os.write(self.fd, _LENGTH.pack(len(body)) + body)
        self.records += 1

    def maybe_compact(self, data):
        if self.records >= COMPACT_RECORDS:
            self._compact(data)

    def _compact(self, data):
        partial = self.snapshot_path + ".partial"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(encode(data))
        os.rename(partial, self.snapshot_path)
        if self.fd is not None:
            os.close(self.fd)
        self.fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND,
                          0o600)
        self.records = 0

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
