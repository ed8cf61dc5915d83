"""Import layering, read from the source: lower layers never import upper ones.

::

    api ──► actor, remote_function, local_mode ──► object_ref  (public API, tools)
    core/: worker ──► runtime ──► submit, direct, connection ──► refcount, object_cache ──► context
           connection ──► socket_turns ──► side_sockets, node_watch, ctrl_c
                                  sched/ edge: node, peers, worker_processes,
                                  node_messages, node_commands, node_requests,
                                  store_requests; plasma/transfer
    sched/state/ (NodeState) ──► scheduler, resources, task, worker_pool, plasma/store
    kv/ ──► transport/, exceptions, serialization
"""
import ast
import itertools
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "zray"

# The node's pure state: no sockets, processes, threads or clocks.
PURE = ["sched/state/*.py", "sched/task.py", "sched/scheduler.py", "sched/resources.py",
        "sched/worker_pool.py", "plasma/store.py"]
IO_MODULES = {"zmq", "subprocess", "socket", "threading", "select", "asyncio", "time",
              "psutil", "multiprocessing"}
EDGE = {"zray.sched.node", "zray.sched.node_messages", "zray.sched.node_commands",
        "zray.sched.peers", "zray.sched.worker_processes",
        "zray.sched.node_requests", "zray.sched.store_requests", "zray.plasma.transfer",
        "zray.transport.sockets", "zray.kv", "zray.kv.client", "zray.kv.server"}
PUBLIC = {"zray", "zray.api", "zray.actor", "zray.remote_function", "zray.local_mode",
          "zray.cli", "zray.cli_daemons", "zray.cli_inspect", "zray.cli_options",
          "zray.introspection"}


# The API modules, lowest first: each may import only those before it (and
# never ``api``, which imports them all): no cycle, even through a lazy import.
API_ORDER = ["zray.object_ref", "zray.local_mode", "zray.remote_function", "zray.actor",
             "zray.api", "zray.introspection"]
# The client runtime's parts, lowest first, with what each may import of the others.
CORE_ORDER = ["zray.core.context", "zray.core.refcount", "zray.core.object_cache",
              "zray.core.ctrl_c", "zray.core.node_watch", "zray.core.side_sockets",
              "zray.core.socket_turns", "zray.core.connection", "zray.core.direct", "zray.core.endpoint",
              "zray.core.submit", "zray.core.runtime",
              "zray.core.worker"]


def imports(path, toplevel_only=False):
    """Absolute names of the modules a file imports (relative ones resolved)."""
    package = ".".join(("zray",) + path.relative_to(ROOT).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(("zray",) + path.relative_to(ROOT).parts[:-1])
    tree = ast.parse(path.read_text())
    nodes = tree.body if toplevel_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def files(*patterns):
    found = sorted({p for pattern in patterns for p in ROOT.glob(pattern)})
    assert found, patterns
    return found


def _first_part(name):
    return name.split(".")[0]


@pytest.mark.parametrize("path", files(*PURE), ids=lambda p: str(p.relative_to(ROOT)))
def test_node_state_does_no_io(path):
    names = imports(path)
    io = sorted(n for n in names if _first_part(n) in IO_MODULES)
    assert not io, f"{path.name} imports {io}: the node's state must stay free of I/O"
    edge = sorted(n for n in names if n in EDGE)
    assert not edge, f"{path.name} imports the node's edge {edge}"


@pytest.mark.parametrize("path", files("transport/*.py", "kv/*.py", "sched/**/*.py",
                                       "plasma/*.py", "core/*.py", "serialization.py",
                                       "exceptions.py"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_runtime_never_imports_the_public_api(path):
    upper = sorted(n for n in imports(path) if n in PUBLIC)
    assert not upper, f"{path.relative_to(ROOT)} imports the API layer {upper}"


@pytest.mark.parametrize("path", files("transport/*.py"), ids=lambda p: p.name)
def test_transport_is_the_bottom(path):
    inner = sorted(n for n in imports(path) if n.startswith("zray.")
                   and not n.startswith(("zray.transport", "zray.exceptions")))
    assert not inner, f"transport/{path.name} imports {inner}"


@pytest.mark.parametrize("path", files("sched/**/*.py", "plasma/*.py", "kv/*.py"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_daemons_do_not_import_the_client_runtime(path):
    client = sorted(n for n in imports(path) if n.startswith("zray.core"))
    assert not client, f"{path.relative_to(ROOT)} imports the client runtime {client}"


def test_the_layering_check_sees_a_violation(tmp_path):
    """The checker itself: a relative import of the edge is resolved and caught."""
    fake = ROOT / "sched" / "state" / "node_state.py"
    names = imports(fake)
    assert "zray.sched.scheduler" in names and "zray.plasma.store" in names


def test_only_the_node_loop_writes_to_its_sockets():
    """Everything sent to a client goes through ``node.send``, which keeps the
    order a client sees (queued object pushes leave first)."""
    offenders = [str(p.relative_to(ROOT)) for p in files("**/*.py")
                 if p.name != "node.py" and re.search(r"\bnode\.(tcp_)?router\b", p.read_text())]
    assert not offenders, f"{offenders} write to the node's ROUTER past node.send"


def test_only_the_scheduler_changes_its_queues():
    """Others ask it (make_ready, take_surplus, keep_holding ...), never rewrite it."""
    pattern = re.compile(r"scheduler\.(queues|infeasible|running)\s*(\[|=[^=]|\.(pop|append|"
                         r"remove|clear)\b)")
    offenders = [str(p.relative_to(ROOT)) for p in files("**/*.py")
                 if p.name != "scheduler.py" and pattern.search(p.read_text())]
    assert not offenders, f"{offenders} change the scheduler's queues directly"


def _module_path(name):
    parts = name.split(".")[1:]
    path = ROOT.joinpath(*parts)
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _imported_modules(name, among):
    """The modules of ``among`` that module ``name`` imports, at any depth in the file."""
    found = imports(_module_path(name))
    return {m for m in among if m != name and (m in found or any(f.startswith(m + ".")
                                                                  for f in found))}


@pytest.mark.parametrize("order", [API_ORDER, CORE_ORDER], ids=["api", "core"])
def test_modules_import_only_lower_ones(order):
    """A strict order means no cycle: not even a lazy ``from .api import``
    inside a function (the API modules find the runtime in core.context)."""
    for index, name in enumerate(order):
        upper = sorted(_imported_modules(name, order[index + 1:]))
        assert not upper, f"{name} imports {upper}, which sit above it"


def test_the_api_graph_has_no_cycle():
    modules = set(API_ORDER) | {"zray.core.context"}
    graph = {m: _imported_modules(m, modules) for m in modules}
    for a, b in itertools.permutations(modules, 2):
        assert not (b in graph[a] and a in graph[b]), f"{a} and {b} import each other"


def test_nothing_asks_which_runtime_it_has():
    """Local mode is a runtime with the same methods: the API never branches on it."""
    offenders = [str(p.relative_to(ROOT)) for p in files("**/*.py")
                 if re.search(r"is_local_mode|isinstance\([^)]*LocalRuntime", p.read_text())]
    assert not offenders, f"{offenders} branch on local mode"


def test_objects_are_decoded_in_one_place():
    """Shared-memory objects are mapped and decoded only by the object cache."""
    offenders = [str(p.relative_to(ROOT)) for p in files("**/*.py")
                 if p.name not in ("object_cache.py", "client.py")
                 and re.search(r"object_store\.read\(|plasma\.client\.read\(", p.read_text())]
    assert not offenders, f"{offenders} decode objects past ObjectCache.decode"
