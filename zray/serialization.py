"""Turning values into bytes and back.

- Data goes through the C pickler at protocol 5. Buffers of 4 KiB and more
  (numpy arrays, bytes-like objects) are taken out of band, so they can be
  written to shared memory or sent as their own ZeroMQ frame without a copy,
  and read back as views of that memory.
- Code and classes that cannot be imported by name in another process
  (defined in ``__main__``, lambdas, closures) are pickled by value with dill.
  A class pickled by value carries a tracking id: the process that loads
  it again with an id it has seen (the driver that defined it, a worker that
  met it before) gets the very same class back, so ``isinstance``, ``==`` of
  dataclasses and ``except MyError:`` work on values that made a round trip.
- ``ObjectRef``s met while pickling are collected, so the runtime knows which
  objects a serialized value keeps alive.
- ``register_custom_serializer`` hooks in per class. A registration made in
  a driver is sent to its node, which pushes it to every worker (those
  running and those to come), so values of the class can be made and read in
  any process. Classes are matched by object, or by module and name when a
  class defined in ``__main__`` was rebuilt in another process.
"""
import functools
import io
import logging
import os
import pickle
import sys
import threading
import types
import weakref

from .exceptions import RayError

log = logging.getLogger("zray.serialization")

OUT_OF_BAND_MIN_BYTES = 4096

_custom = {}          # class -> (serializer, deserializer)
_custom_by_name = {}  # (module, qualname) -> (serializer, deserializer)
registrations = []   # shipped form of each registration made here, in order
_local = threading.local()


class SerializationError(RayError, TypeError):
    """A value could not be pickled; the message names it and what to do."""


class Serialized:
    """A value in wire form: ``meta`` is the pickle stream, ``buffers`` the
    out-of-band buffers (views the caller must keep alive until written),
    ``contained`` the ids of ObjectRefs inside the value."""

    __slots__ = ("meta", "buffers", "contained")

    def __init__(self, meta, buffers, contained):
        self.meta = meta
        self.buffers = buffers
        self.contained = contained

    @property
    def nbytes(self):
        if not self.buffers:        # (the usual small value)
            return len(self.meta)
        return len(self.meta) + sum(memoryview(b).nbytes for b in self.buffers)


def _needs_value_pickling(obj):
    """True for functions/classes another process could not import by name."""
    module = getattr(obj, "__module__", None)
    if module == "__main__" or module is None:
        return True
    qualname = getattr(obj, "__qualname__", "")
    return "<lambda>" in qualname or "<locals>" in qualname


def _load_by_value(blob):
    import dill
    return dill.loads(blob)


# Classes pickled by value, by tracking id, both ways; weak, so a class
# nothing else uses can still go.
_class_ids = weakref.WeakKeyDictionary()      # class -> tracking id
_classes_by_id = weakref.WeakValueDictionary()  # tracking id -> class
_tracking_lock = threading.Lock()


def _tracking_id(cls):
    with _tracking_lock:
        class_id = _class_ids.get(cls)
        if class_id is None:
            class_id = _class_ids[cls] = os.urandom(16)
            _classes_by_id[class_id] = cls
        return class_id


def _reduce_class_by_value(cls, contained):
    return _load_class_by_value, (_tracking_id(cls), dumps_by_value(cls, contained, top=cls))


def _load_class_by_value(class_id, blob):
    """The class this process already knows under ``class_id``, else the one
    ``blob`` holds (remembered under that id from now on)."""
    with _tracking_lock:
        known = _classes_by_id.get(class_id)
    if known is not None:
        return known
    cls = loads_function(blob)
    with _tracking_lock:
        known = _classes_by_id.get(class_id)
        if known is not None:       # another thread loaded it meanwhile
            return known
        try:
            _class_ids[cls] = class_id
            _classes_by_id[class_id] = cls
        except TypeError:           # not weak-referenceable: cannot be tracked
            pass
    return cls


def _take_buffer(buffers, pickle_buffer):
    if pickle_buffer.raw().nbytes < OUT_OF_BAND_MIN_BYTES:
        return True          # small: keep it in the stream
    buffers.append(pickle_buffer.raw())
    return False


class _Pickler(pickle.Pickler):
    def __init__(self, file, buffers, contained):
        # The callback must not refer to self: a pickler in a reference cycle
        # keeps its memo (every object pickled, ObjectRefs and actor handles
        # included) alive until the garbage collector runs.
        super().__init__(file, protocol=5, buffer_callback=functools.partial(_take_buffer, buffers))
        self._contained = contained

    def reducer_override(self, obj):
        cls = type(obj)
        if cls is _ndarray:
            if obj.dtype.kind in "mM":
                return _reduce_time_array(obj)
            if obj.nbytes < OUT_OF_BAND_MIN_BYTES and not obj.dtype.hasobject:
                return _reduce_small_array(obj)
        custom = _custom.get(cls)
        if custom is None and _custom_by_name:
            custom = _custom_by_name.get((getattr(cls, "__module__", None),
                                          getattr(cls, "__qualname__", None)))
        if custom is not None:
            # The deserializer travels with the value, so a reader needs no
            # registration; writers in other processes get it shipped.
            serializer, deserializer = custom
            try:
                return deserializer, (serializer(obj),)
            except Exception as exc:
                raise SerializationError(
                    f"the custom serializer registered for {cls.__qualname__} raised "
                    f"{type(exc).__name__}: {exc}. Fix the serializer passed to "
                    f"ray.register_custom_serializer({cls.__name__}, ...)") from exc
        hook = getattr(cls, "__zray_reduce__", None)
        if hook is not None:
            return hook(obj, self._contained)
        if isinstance(obj, type) and _needs_value_pickling(obj):
            return _reduce_class_by_value(obj, self._contained)
        if isinstance(obj, types.FunctionType) and _needs_value_pickling(obj):
            return _load_by_value, (dumps_by_value(obj, self._contained),)
        return NotImplemented


def _reduce_small_array(array):
    """Small arrays travel in the stream; they come back read-only like the
    large ones (views of shared memory), as in Ray."""
    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        array = array.copy()
    rebuild, args = array.__reduce_ex__(5)[:2]
    return _rebuild_read_only, (rebuild, args)


def _rebuild_read_only(rebuild, args):
    array = rebuild(*args)
    array.flags.writeable = False
    return array


def _reduce_time_array(array):
    """datetime64/timedelta64 arrays out of band too (numpy's own reduce
    copies them into the stream), so they come back as zero-copy views."""
    if array.nbytes < OUT_OF_BAND_MIN_BYTES:
        return NotImplemented
    if array.flags.c_contiguous:
        order = "C"
    elif array.flags.f_contiguous:
        order = "F"
    else:
        return NotImplemented
    as_ints = array.view(f"{array.dtype.byteorder if array.dtype.byteorder != '|' else '='}"
                         f"u{array.dtype.itemsize}")
    return _rebuild_time_array, (pickle.PickleBuffer(as_ints), array.dtype.str, array.shape,
                                 order)


def _rebuild_time_array(buffer, dtype, shape, order):
    import numpy
    flat = numpy.frombuffer(buffer, dtype=numpy.dtype(dtype))
    return flat.reshape(shape, order=order)


_ndarray = None       # numpy.ndarray once numpy is loaded (no import of our own)


_SCALARS = frozenset({bytes, str, int, float, bool, type(None)})
_SHALLOW_MAX = 16


def _plain(value, depth=2):
    """Scalars, and small lists, tuples and str-keyed dicts of them (two
    levels: a task's ``(args, kwargs)``), with no custom serializer: nothing
    the plain pickler would do differently (no ObjectRef, array or callback)."""
    cls = type(value)
    if cls in _SCALARS:
        return cls not in _custom
    if cls not in _CONTAINERS or not depth or cls in _custom or len(value) > _SHALLOW_MAX:
        return False
    if cls is dict:
        for key, item in value.items():
            if type(key) is not str or not _plain(item, depth - 1):
                return False
        return True
    for item in value:
        if not _plain(item, depth - 1):
            return False
    return True


_CONTAINERS = frozenset({list, tuple, dict})


def serialize(value):
    """Pickle ``value``; raise SerializationError naming what failed."""
    if _plain(value):       # (the common tiny value: no custom pickler to set up)
        return Serialized(pickle.dumps(value, protocol=5), [], [])
    global _ndarray
    if _ndarray is None and "numpy" in sys.modules:
        _ndarray = sys.modules["numpy"].ndarray
    buffers, contained = [], []
    stream = io.BytesIO()
    try:
        _Pickler(stream, buffers, contained).dump(value)
    except SerializationError:
        raise                     # a custom serializer failed: never bypass it
    except Exception as exc:
        try:                      # dill copes with more (nested closures, ...)
            import dill
            meta = dill.dumps(value, protocol=5, recurse=True)
            return Serialized(meta, [], _refs_in(value))
        except Exception:
            pass
        raise SerializationError(
            f"could not serialize {_describe(value)}: {type(exc).__name__}: {exc}. "
            f"Pass values that pickle (no open files, sockets, locks or generators), "
            f"or register a serializer with ray.register_custom_serializer.") from exc
    return Serialized(stream.getvalue(), buffers, contained)


def _refs_in(value):
    found = []
    try:
        _Pickler(io.BytesIO(), [], found).dump(value)
    except Exception:
        pass
    return found


def deserialize(meta, buffers=()):
    return pickle.loads(meta, buffers=buffers)


_code_pickler = None


def _make_code_pickler():
    """dill, but modules other than __main__ go by name.

    Plain dill pickles the state of any module outside site-packages (the
    user's own helpers, zray itself in a source checkout) by value, which
    drags sockets and locks along and is slow. A module is importable by
    name wherever the code runs, so send the name.
    """
    import importlib
    import types

    import dill

    class CodePickler(dill.Pickler):
        dispatch = dill.Pickler.dispatch.copy()

        def reducer_override(self, obj):
            # ObjectRefs met inside code are collected: the code keeps them alive.
            hook = getattr(type(obj), "__zray_reduce__", None)
            if hook is not None:
                return hook(obj, self.contained)
            # Classes met inside code go with their tracking id (see
            # _load_class_by_value), except those already being pickled
            # further up (classes that refer to each other): dill inlines those.
            if (isinstance(obj, type) and _needs_value_pickling(obj)
                    and obj not in _classes_being_pickled()):
                return _reduce_class_by_value(obj, self.contained)
            return NotImplemented

    default_save_module = CodePickler.dispatch[types.ModuleType]

    def save_module(pickler, module):
        if module.__name__ == "__main__" or module.__name__ not in sys.modules:
            return default_save_module(pickler, module)
        pickler.save_reduce(importlib.import_module, (module.__name__,), obj=module)

    CodePickler.dispatch[types.ModuleType] = save_module
    return CodePickler


def dumps_by_value(obj, contained, top=None):
    """``obj`` (code or a class) pickled by value with dill; modules by name.
    Classes inside go by tracking id, except ``top`` (the class ``obj``
    itself); the ids of ObjectRefs inside are appended to ``contained``."""
    global _code_pickler
    if _code_pickler is None:
        _code_pickler = _make_code_pickler()
    stream = io.BytesIO()
    pickler = _code_pickler(stream, protocol=5, recurse=True)
    pickler.contained = contained
    stack = _classes_being_pickled()
    stack.append(top)
    try:
        pickler.dump(obj)
    finally:
        stack.pop()
    return stream.getvalue()


def _classes_being_pickled():
    stack = getattr(_local, "classes_being_pickled", None)
    if stack is None:
        stack = _local.classes_being_pickled = []
    return stack


def dumps_function(fn):
    """Code is pickled with dill so closures and __main__ code travel.
    Returns (blob, ids of the ObjectRefs the code holds)."""
    contained = []
    try:
        return dumps_by_value(fn, contained), contained
    except Exception as exc:
        raise SerializationError(
            f"could not serialize remote function or class {_describe(fn)}: "
            f"{type(exc).__name__}: {exc}. Move objects that do not pickle "
            f"(locks, sockets, open files) out of its globals or create them inside it.") from exc


def loads_function(blob):
    import dill
    return dill.loads(blob)


def _describe(value):
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"


def register_custom_serializer(cls, use_pickle=False, use_dict=False, serializer=None,
                               deserializer=None, local=False, driver_id=None, class_id=None):
    """Tell zray how to turn objects of ``cls`` into something picklable.

    Exactly one of: ``use_pickle=True`` (plain pickle, the default anyway),
    ``use_dict=True`` (the object's ``__dict__``), or ``serializer=`` with
    ``deserializer=``. Applies in every process of the cluster unless
    ``local=True``. ``driver_id`` and ``class_id`` are accepted and unused.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_custom_serializer needs a class, got {cls!r}")
    chosen = sum(bool(x) for x in (use_pickle, use_dict, serializer is not None))
    if chosen != 1:
        raise ValueError("register_custom_serializer: pass exactly one of use_pickle=True, "
                         "use_dict=True, or serializer= together with deserializer=")
    if serializer is not None and deserializer is None:
        raise ValueError("register_custom_serializer: serializer= needs a deserializer= too")
    for name, fn in (("serializer", serializer), ("deserializer", deserializer)):
        if fn is not None and not callable(fn):
            raise TypeError(f"register_custom_serializer: {name}= must be callable, got {fn!r}")
    _apply_registration(cls, use_pickle, use_dict, serializer, deserializer)
    if local:
        return
    import dill
    try:
        blob = dill.dumps((cls, use_pickle, use_dict, serializer, deserializer), recurse=True)
    except Exception as exc:
        raise SerializationError(
            f"register_custom_serializer: the class {cls.__qualname__} or its serializer "
            f"functions cannot be sent to other processes ({type(exc).__name__}: {exc}). Define "
            f"them at module level, or pass local=True to register in this process only") from exc
    registrations.append(blob)
    from .core import context
    ship_registrations(context.current(), [blob])


def _apply_registration(cls, use_pickle, use_dict, serializer, deserializer):
    key = (cls.__module__, cls.__qualname__)
    if use_pickle:
        _custom.pop(cls, None)
        _custom_by_name.pop(key, None)
        return
    if use_dict:
        def serializer(obj):
            return dict(obj.__dict__)

        def deserializer(state, _cls=cls):
            obj = _cls.__new__(_cls)
            obj.__dict__.update(state)
            return obj
    _custom[cls] = _custom_by_name[key] = (serializer, deserializer)


def ship_registrations(runtime, blobs=None):
    """Send registrations (default: all made here) to ``runtime``'s node.

    One-way and ordered before whatever this process sends next, so a task
    submitted after ``register_custom_serializer`` runs where it is known.
    """
    send = getattr(runtime, "send_message", None)     # None: not connected, or local mode
    if send is None:
        return
    from .transport import protocol as P
    for blob in (registrations if blobs is None else blobs):
        send(P.REQUEST, 0, "register_serializer", (blob, list(sys.path)))


def install_shipped_registrations(items):
    """Workers: apply registrations another process made (node's SER message)."""
    import dill
    for blob, sys_path in items:
        for entry in sys_path:
            if entry not in sys.path:
                sys.path.append(entry)
        try:
            _apply_registration(*dill.loads(blob))
        except Exception as exc:
            log.warning("could not load a custom serializer registered by the driver: %s: %s. "
                        "Is the module defining the class importable here (same working "
                        "directory / PYTHONPATH)?", type(exc).__name__, exc)
