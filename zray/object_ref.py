"""``ObjectRef``: a future for a value in the object store.

Each live ``ObjectRef`` counts in its process's runtime; the runtime tells
the node when the process starts and stops holding an object, so memory is
released once no process (and no pending task) needs it.
"""
import os
import threading

from .core import context


class ObjectRef:
    __slots__ = ("id", "_runtime", "__weakref__")

    def __init__(self, object_id, borrowed=False, _runtime=None):
        if not isinstance(object_id, bytes):
            raise TypeError(f"ObjectRef needs an id of bytes, got {object_id!r}")
        self.id = object_id
        runtime = _runtime if _runtime is not None else context.current()
        self._runtime = runtime
        if runtime is not None:
            runtime.add_local_ref(object_id, borrowed)

    def __del__(self):
        runtime = self._runtime
        if runtime is not None:
            runtime.drop_local_ref(self.id)

    def binary(self):
        return self.id

    def hex(self):
        return self.id.hex()

    def __hash__(self):
        return hash(self.id)

    def __eq__(self, other):
        return isinstance(other, ObjectRef) and other.id == self.id

    def __repr__(self):
        return f"ObjectRef({self.id.hex()})"

    def __reduce__(self):
        return _rebuild_ref, (self.id,)

    def __zray_reduce__(self, contained):
        contained.append(self.id)
        return _rebuild_ref, (self.id,)

    def __await__(self):
        # ``await ref`` in an async actor: the blocking get runs on the loop's
        # thread pool, so other calls on the loop keep running meanwhile.
        import asyncio
        return asyncio.get_running_loop().run_in_executor(None, _value_of, self).__await__()

    def as_future(self):
        """An asyncio future of the value (call from inside a running loop)."""
        import asyncio
        return asyncio.get_running_loop().run_in_executor(None, _value_of, self)

    @classmethod
    def from_random(cls):
        return cls(os.urandom(20))

    @classmethod
    def nil(cls):
        """The id that names no object (Ray's ``ObjectID.nil()``); never counted."""
        return cls(NIL_ID, _runtime=_NOT_COUNTED)

    def is_nil(self):
        return self.id == NIL_ID


NIL_ID = b"\xff" * 20


class _NotCounted:
    """The runtime of refs no process needs to hold (the nil id)."""

    def add_local_ref(self, object_id, borrowed):
        pass

    def drop_local_ref(self, object_id):
        pass


_NOT_COUNTED = _NotCounted()


def _value_of(ref):
    return context.require().get([ref.id])[0]


def _rebuild_ref(object_id):
    batch = _rebuilding.refs
    if batch is None:
        return ObjectRef(object_id, borrowed=True)
    ref = _new_ref(ObjectRef)
    ref.id = object_id
    ref._runtime = None         # counted when the whole value is (see below)
    batch.append(ref)
    return ref


class _Rebuilding(threading.local):
    refs = None         # the ObjectRefs the load in progress (this thread) rebuilt


_new_ref = object.__new__
_rebuilding = _Rebuilding()


def may_hold_refs(meta):
    """False only if a pickle surely rebuilds no ObjectRef (its name is
    absent; a large memoryview is not searched)."""
    if isinstance(meta, bytes):
        return b"_rebuild_ref" in meta
    return len(meta) > 4096 or b"_rebuild_ref" in bytes(meta)


def counting_refs_once(load, meta, buffers):
    """``load(meta, buffers)``; the ObjectRefs it rebuilds are counted in
    one go after it (one lock for a list of 10,000 refs, not one each).
    They are held here until then, so none dies uncounted."""
    if _rebuilding.refs is not None or not may_hold_refs(meta):
        return load(meta, buffers)      # (nested: the outer load counts them)
    batch = _rebuilding.refs = []
    try:
        return load(meta, buffers)
    finally:
        _rebuilding.refs = None
        if batch:
            runtime = context.current()
            if runtime is not None:
                runtime.add_local_refs([ref.id for ref in batch], True)
                for ref in batch:
                    ref._runtime = runtime


# The old name, as in early Ray.
ObjectID = ObjectRef
