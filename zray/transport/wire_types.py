"""Field types of the typed wire, and the records built from them.

A head is a msgpack array: msgpack turns bytes into None, bools, numbers,
strings, bytes, tuples and dicts and nothing else (it never runs code), and
refuses lengths longer than its input. Each field is then checked against
the type its message declares (``protocol.py``), so a wrong type is refused
at the edge, as a ``ProtocolError``, rather than crashing a daemon later
from inside its state. A checker takes the decoded value and returns it
(records: as their NamedTuple) or raises; its ``kind`` and ``parts`` say
what it checks (tests build values from them).
"""
import sys
import threading
from collections import namedtuple

import msgpack


class ProtocolError(ValueError):
    """A message that does not follow zray's wire protocol (``protocol.py``)."""


def _simple(name, python_type):
    def check(value):
        if type(value) is python_type:
            return value
        raise ProtocolError(f"expected {name}, got {type(value).__name__}")
    check.type_name, check.kind, check.parts = name, name, ()
    return check


BYTES = _simple("bytes", bytes)
STR = _simple("str", str)
INT = _simple("int", int)
BOOL = _simple("bool", bool)


def NUM(value):
    if type(value) is int or type(value) is float:
        return value
    raise ProtocolError(f"expected a number, got {type(value).__name__}")


NUM.type_name, NUM.kind, NUM.parts = "number", "number", ()


def DATA(value):
    """Plain data, taken as msgpack decoded it: stored or passed on, never run."""
    return value


DATA.type_name, DATA.kind, DATA.parts = "data", "data", ()


def opt(check):
    def check_optional(value):
        return None if value is None else check(value)
    check_optional.type_name = f"{check.type_name} or None"
    check_optional.kind, check_optional.parts = "opt", (check,)
    return check_optional


def seq(check):
    """A tuple of ``check`` values (sent as a list or tuple)."""
    if check is BYTES or check is STR:
        wanted = bytes if check is BYTES else str

        def check_simple_items(value):
            if type(value) is tuple and all(type(item) is wanted for item in value):
                return value
            raise ProtocolError(f"expected a list of {check.type_name}")
        check_simple_items.type_name = f"list of {check.type_name}"
        check_simple_items.kind, check_simple_items.parts = "seq", (check,)
        return check_simple_items

    def check_items(value):
        if type(value) is not tuple:
            raise ProtocolError(f"expected a list of {check.type_name}, got "
                                f"{type(value).__name__}")
        return tuple([check(item) for item in value])
    check_items.type_name = f"list of {check.type_name}"
    check_items.kind, check_items.parts = "seq", (check,)
    return check_items


def mapping(check_key, check_value):
    def check_map(value):
        if type(value) is not dict:
            raise ProtocolError(f"expected a dict, got {type(value).__name__}")
        if value:
            return {check_key(k): check_value(v) for k, v in value.items()}
        return value
    check_map.type_name = f"dict of {check_key.type_name} -> {check_value.type_name}"
    check_map.kind, check_map.parts = "mapping", (check_key, check_value)
    return check_map


def fixed(*required, optional=()):
    """A tuple of ``required`` values, then up to len(optional) more."""
    checks = required + tuple(optional)
    names = ", ".join(c.type_name for c in required) + "".join(
        f"[, {c.type_name}]" for c in optional)

    def check_fixed(value):
        if type(value) is not tuple or not len(required) <= len(value) <= len(checks):
            raise ProtocolError(f"expected ({names})")
        return tuple([check(item) for check, item in zip(checks, value)])
    check_fixed.type_name = f"({names})"
    check_fixed.kind, check_fixed.parts = "fixed", (required, tuple(optional))
    return check_fixed


def pair(check_first, check_second):
    return fixed(check_first, check_second)


def keyed(what, /, **checks):
    """A dict whose keys are declared, each with its type; all optional."""
    def check_keys(value):
        if type(value) is not dict:
            raise ProtocolError(f"{what}: expected a dict, got {type(value).__name__}")
        for key, item in value.items():
            check = checks.get(key)
            if check is None:
                raise ProtocolError(f"{what}: undeclared key {key!r} (declare it in "
                                    f"zray/transport/protocol.py)")
            check(item)
        return value
    check_keys.type_name, check_keys.kind, check_keys.parts = what, "keyed", checks
    return check_keys


def record(name, /, **fields):
    """A NamedTuple type with a declared type per field. ``Record.check(v)``
    turns a decoded tuple into the record, or raises ProtocolError;
    ``Record.check_tagged(v)`` does the same for ``(tag, *fields)``."""
    # Named as a member of the declaring module, so records pickle (TaskSpec).
    cls = namedtuple(name, list(fields), module=sys._getframe(1).f_globals["__name__"])
    cls.check = staticmethod(_record_checker(name, cls, fields, tagged=False))
    cls.check_tagged = staticmethod(_record_checker(name, cls, fields, tagged=True))
    cls.check.type_name, cls.check.kind, cls.check.parts = name, "record", cls
    cls.field_types = dict(fields)
    cls.__doc__ = f"{name}({', '.join(f'{f}: {c.type_name}' for f, c in fields.items())})"
    return cls


_INLINE_TYPES = {BYTES: "bytes", STR: "str", INT: "int", BOOL: "bool"}
_WRONG = "raise ProtocolError('wrong type')"


def _statements(check, var, index):
    """Lines checking (and, for records, converting) ``var`` against ``check``:
    simple types and lists of them inline, no call (the hot messages are
    mostly these); anything else through the check ``_c<index>``."""
    kind, parts = check.kind, check.parts
    if check in _INLINE_TYPES:
        return [f"if type({var}) is not {_INLINE_TYPES[check]}: {_WRONG}"]
    if check is NUM:
        return [f"if type({var}) is not int and type({var}) is not float: {_WRONG}"]
    if check is DATA:
        return []
    if kind == "opt" and parts[0] in _INLINE_TYPES:
        return [f"if {var} is not None and type({var}) is not {_INLINE_TYPES[parts[0]]}: "
                f"{_WRONG}"]
    if kind == "seq" and parts[0] in _INLINE_TYPES:
        return [f"if type({var}) is not tuple: {_WRONG}",
                f"for item in {var}:",
                f"    if type(item) is not {_INLINE_TYPES[parts[0]]}: {_WRONG}"]
    if kind == "seq" and parts[0].kind == "record":
        return [f"if type({var}) is not tuple: {_WRONG}",
                f"if {var}: {var} = tuple([_c{index}(item) for item in {var}])"]
    if kind == "opt":
        return [f"if {var} is not None: {var} = _c{index}({var})"]
    return [f"{var} = _c{index}({var})"]


def _record_checker(name, cls, fields, tagged):
    """The check of one record, written out field by field (generated from
    the declarations in protocol.py, never from received data)."""
    checks = list(fields.values())
    names = [f"f{i}" for i in range(len(checks))]
    namespace = {"ProtocolError": ProtocolError, "_cls": cls, "_make": tuple.__new__,
                 "_named": lambda exc, value: _name_the_field(name, fields, exc, value, tagged)}
    for index, check in enumerate(checks):
        # What ``_c<index>`` calls in _statements: a list's items, an optional's value.
        unwrapped = check.kind == "opt" or (check.kind == "seq" and check.parts[0].kind == "record")
        namespace[f"_c{index}"] = check.parts[0] if unwrapped else check
    count = len(checks) + tagged
    fields_tuple = "".join(n + ", " for n in names)
    body = [f"({'_, ' if tagged else ''}{fields_tuple}) = value"] if count else []
    for index, (var, check) in enumerate(zip(names, checks)):
        body += _statements(check, var, index)
    body.append(f"return _make(_cls, ({fields_tuple}))")
    source = "\n".join(
        ["def check_record(value):",
         f"    if type(value) is not tuple or len(value) != {count}:",
         f"        raise ProtocolError({name + ': expected ' + str(len(checks)) + ' fields'!r})",
         "    try:"] + ["        " + line for line in body]
        + ["    except ProtocolError as exc:", "        _named(exc, value)"])
    exec(source, namespace)
    return namespace["check_record"]


def _name_the_field(name, fields, exc, value, tagged):
    """Raise ``exc`` again naming the field at fault (only on the error path)."""
    for item, (field, check) in zip(value[tagged:], fields.items()):
        try:
            check(item)
        except ProtocolError as inner:
            raise ProtocolError(f"{name}.{field}: {inner}") from None
    raise exc


_local = threading.local()


def encode(items):
    """msgpack bytes of a tuple of plain values (TypeError for anything else).
    A Packer per thread: a Packer keeps a buffer between calls, and a garbage
    collection inside one pack may let another thread run."""
    try:
        return _local.packer.pack(items)
    except AttributeError:
        _local.packer = msgpack.Packer(autoreset=True)
        return _local.packer.pack(items)


def _refuse_extension(code, _data):
    raise ProtocolError(f"msgpack extension type {code} is not part of zray's wire")


def decode(frame):
    """The plain values in ``frame``; ProtocolError if it is not msgpack."""
    try:
        return msgpack.unpackb(frame, use_list=False, raw=False, strict_map_key=False,
                               ext_hook=_refuse_extension)
    except Exception as exc:    # msgpack raises several kinds; all mean "malformed"
        raise ProtocolError(f"a message head that is not msgpack: {exc!r}") from None
