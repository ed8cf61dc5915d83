"""The shared-memory object store: zero-copy reads, capacity, spilling,
reference counting, plasma_directory/huge_pages and ``zray memory``.

Zero-copy is proven from /proc/self/maps: the array's data pointer must lie
inside a read-only mapping of the object's own file.
"""
import dataclasses
import os

import numpy as np
import pytest
from click.testing import CliRunner

import zray as ray
from conftest import assert_no_leftovers
from zray.exceptions import ObjectStoreFullError
from zray.plasma import shm
from zray.plasma.report import memory_summary
from zray.plasma.disk import SpillDisk
from zray.plasma.spare import SPARE_MAX_BYTES
from zray.plasma.store import IN_MEMORY, ON_DISK, ObjectTable
from zray.serialization import serialize
from zray.transport import protocol as P

MiB = 1024 ** 2


@dataclasses.dataclass
class Sample:
    name: str
    features: np.ndarray
    labels: np.ndarray


def mapping_of(address):
    """(path, permissions) of this process's mapping that holds ``address``."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                return (fields[5] if len(fields) > 5 else ""), fields[1]
    raise AssertionError(f"address {address:#x} is in no mapping")


def object_file(info, ref, plasma_dir="/dev/shm"):
    return os.path.join(plasma_dir, shm.object_file_name(info["session_name"], ref.binary()))


def store_stats():
    return ray.api._runtime().request("store_stats")


def stored(ref):
    """The node's row for ``ref`` (``where``, ``path``: its file or arena
    chunk, ``offset``, ``size``), or None once it is freed."""
    rows = ray.api._runtime().request("memory")
    return next((r for r in rows if r["object_id"] == ref.hex()), None)


def _row(object_hex):
    rows = ray.api._runtime().request("memory")
    return next((r for r in rows if r["object_id"] == object_hex), None)


def in_block(array, row):
    """True if the array's data lies inside the object's own bytes."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= array.ctypes.data < end and fields[-1] == row["path"]:
                # Where the mapping starts in the file, plus the address's distance.
                at = int(fields[2], 16) + array.ctypes.data - start
                return row["offset"] <= at and at + array.nbytes <= row["offset"] + row["size"]
    return False


def arrays_in(value):
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    elif dataclasses.is_dataclass(value):
        value = [getattr(value, f.name) for f in dataclasses.fields(value)]
    if isinstance(value, (list, tuple)):
        return [a for item in value for a in arrays_in(item)]
    return []


@pytest.fixture(scope="class")
def ray_shared():
    """One zray for a class of quick tests (a module-scoped one would still
    be running when this module's own ray.init tests start)."""
    info = ray.init(num_cpus=2)
    yield info
    ray.shutdown()
    assert_no_leftovers(info)


@pytest.fixture
def start_ray():
    """ray.init with the test's own options; shut down and checked after."""
    infos = []

    def start(**options):
        options.setdefault("num_cpus", 1)
        info = ray.init(**options)
        infos.append(info)
        return info
    yield start
    ray.shutdown()
    for info in infos:
        assert_no_leftovers(info)


# == zero copy and reference counting, on one shared zray ====================
class TestSharedSession:
    def test_get_numpy_maps_the_store_read_only(self, ray_shared):
        array = np.arange(2 * MiB // 8, dtype=np.float64)
        ref = ray.put(array)
        value = ray.get(ref)
        np.testing.assert_array_equal(value, array)
        assert not value.flags.writeable
        path, perms = mapping_of(value.ctypes.data)
        row = stored(ref)
        assert path == row["path"] and in_block(value, row)
        assert "-arena-" in path                # large objects live in the arena
        assert perms.startswith("r-")           # mapped read-only, not just flagged
        with pytest.raises(ValueError, match="read-only"):
            value[0] = 1.0
        again = ray.get(ref)
        assert mapping_of(again.ctypes.data)[0] == path

    @pytest.mark.parametrize("wrap", ["list", "dict", "tuple", "dataclass"])
    def test_nested_arrays_are_zero_copy(self, ray_shared, wrap):
        a = np.ones((512, 256), dtype=np.float32)
        b = np.arange(100_000, dtype=np.int64)
        value = {"list": [a, [b]], "dict": {"a": a, "deeper": {"b": b}}, "tuple": (a, (b, 3)),
                 "dataclass": Sample("s", a, b)}[wrap]
        ref = ray.put(value)
        got = ray.get(ref)
        found = arrays_in(got)
        assert len(found) == 2
        for original, array in zip((a, b), found):
            np.testing.assert_array_equal(array, original)
            assert not array.flags.writeable
            assert in_block(array, stored(ref))

    def test_task_argument_and_result_are_zero_copy(self, ray_shared):
        @ray.remote
        def where(x):
            return mapping_of(x.ctypes.data)[0], x.flags.writeable

        ref = ray.put(np.zeros(MiB // 8))
        path, writeable = ray.get(where.remote(ref))
        assert path == stored(ref)["path"] and writeable is False

        @ray.remote
        def make():
            return np.full(MiB // 8, 7.0)

        result_ref = make.remote()
        result = ray.get(result_ref)
        assert (result == 7.0).all() and not result.flags.writeable
        assert in_block(result, stored(result_ref))

    def test_memory_released_after_del(self, ray_shared):
        # Mid-sized objects get a file of their own; it goes with the last ref.
        ref = ray.put(np.ones(MiB // 16))
        path = object_file(ray_shared, ref)
        assert os.path.exists(path) and stored(ref)["path"] == path
        size = os.path.getsize(path)
        held = store_stats()["shm_bytes"]
        assert held >= size >= MiB // 2
        del ref
        stats = store_stats()        # the REMOVE_REF goes out before this request
        assert not os.path.exists(path)
        assert stats["shm_bytes"] == held - size
        # Large ones live in an arena block; it is free again after the last ref.
        assert wait_for(lambda: store_stats()["reserved_bytes"] == 0)   # no spare block held
        before = store_stats()
        ref = ray.put(np.ones(2 * MiB // 8))
        size = stored(ref)["size"]
        block = -(-size // 4096) * 4096
        during = store_stats()
        assert during["shm_bytes"] == before["shm_bytes"] + size >= 2 * MiB
        assert during["arena_used_bytes"] >= before["arena_used_bytes"] + size
        del ref
        after = store_stats()
        assert after["shm_bytes"] == before["shm_bytes"]
        # Only the block reserved ahead for a next put of that size is left,
        # and it goes back when no such put comes.
        assert after["arena_used_bytes"] == before["arena_used_bytes"] + block
        assert after["reserved_bytes"] == size
        assert wait_for(lambda: store_stats()["arena_used_bytes"] == before["arena_used_bytes"])

    def test_arena_block_reused_only_when_no_value_views_it(self, ray_shared):
        # Above SPARE_MAX_BYTES: no block is reserved ahead of the next put,
        # so each put takes the first free block.
        n = (SPARE_MAX_BYTES + 4 * MiB) // 8
        first = ray.put(np.full(n, 1.0))
        block = stored(first)
        del first                                   # never read: its block is free at once
        second = ray.put(np.full(n, 2.0))
        assert stored(second)["offset"] == block["offset"]      # same pages again
        value = ray.get(second)
        assert store_stats()["pinned_objects"] == 1
        del second                                  # freed, but `value` still views it
        third = ray.put(np.full(n, 3.0))
        assert stored(third)["offset"] != block["offset"]
        assert (value == 2.0).all()
        del value                                   # the pin goes (batched with the refs)
        assert wait_for(lambda: store_stats()["pinned_objects"] == 0)
        del third
        fourth = ray.put(np.full(n, 4.0))
        assert stored(fourth)["offset"] == block["offset"]
        assert (ray.get(fourth) == 4.0).all()

    def test_a_repeated_put_takes_the_block_reserved_ahead_for_it(self, ray_shared):
        assert wait_for(lambda: store_stats()["reserved_bytes"] == 0)
        before = store_stats()
        array = np.ones(4 * MiB // 8)
        offsets = []
        for i in range(6):
            ref = ray.put(array)
            offsets.append(stored(ref)["offset"])
            assert (ray.get(ref) == 1.0).all()
            del ref
        stats = store_stats()
        # One reserve round trip, for the first put; each later one took the
        # block asked for (without waiting) after the put before it.
        assert stats["reservations"] == before["reservations"] + 1
        assert stats["spares_granted"] >= before["spares_granted"] + 6
        assert len(set(offsets)) == 2                 # two blocks in turn: pages reused
        # Another size: a plain reservation; then the spare goes back unused.
        other = ray.put(np.ones(3 * MiB // 8))
        assert store_stats()["reservations"] == before["reservations"] + 2
        del other
        assert wait_for(lambda: store_stats()["reserved_bytes"] == 0)

    def test_freed_arena_pages_go_back_to_the_os(self, ray_shared):
        chunk = os.path.join("/dev/shm", f"zray-{ray_shared['session_name']}-arena-0")

        def resident():
            return os.stat(chunk).st_blocks * 512

        refs = [ray.put(np.full(64 * MiB // 8, float(i))) for i in range(3)]
        peak = resident()
        assert peak >= 3 * 64 * MiB
        assert store_stats()["arena_resident_bytes"] >= 3 * 64 * MiB
        del refs
        # Not at once (a put of the same size soon after reuses the pages),
        # but within a few of the node's ticks.
        assert wait_for(lambda: resident() <= peak - 3 * 64 * MiB, 30), (peak, resident())
        assert store_stats()["arena_resident_bytes"] <= peak - 3 * 64 * MiB
        again = ray.put(np.full(64 * MiB // 8, 7.0))     # pages again where there were none
        assert (ray.get(again) == 7.0).all() and resident() >= 64 * MiB

    def test_pending_task_and_containing_object_keep_objects_alive(self, ray_shared):
        inner = ray.put(np.ones(MiB // 8))
        inner_id = inner.hex()
        outer = ray.put([inner])        # a stored object holding a ref counts as a holder
        del inner
        assert stored(outer) is not None and _row(inner_id) is not None
        (inner_again,) = ray.get(outer)
        assert ray.get(inner_again).sum() == MiB // 8
        del inner_again, outer
        assert wait_for(lambda: _row(inner_id) is None), ray.api._runtime().request("memory")

        @ray.remote
        def total(x):
            return float(x.sum())

        arg = ray.put(np.ones(MiB // 8))
        arg_id = arg.hex()
        result = total.remote(arg)
        del arg                     # the submitted task still needs it
        assert ray.get(result) == MiB // 8
        assert wait_for(lambda: _row(arg_id) is None)


    def test_a_value_holding_many_refs_keeps_each_alive_while_it_lives(self, ray_shared):
        """The refs a get rebuilds are counted in one go after the value is
        whole (object_ref.counting_refs_once): each still keeps its object."""
        @ray.remote
        def make(n):
            return [ray.put(np.full(1024, float(i))) for i in range(n)]

        outer = make.remote(500)
        held = ray.get(outer)
        again = ray.get(outer)              # a second value holding the same refs
        ids = [ref.hex() for ref in held]
        del outer
        rows = {row["object_id"] for row in ray.api._runtime().request("memory")}
        assert set(ids) <= rows
        del held
        assert [ray.get(ref)[0] for ref in again[::50]] == [float(i) for i in range(0, 500, 50)]
        del again
        assert wait_for(lambda: not set(ids) & {
            row["object_id"] for row in ray.api._runtime().request("memory")}, 20)

        @ray.remote
        def first_of(refs):
            return float(ray.get(refs[0])[0])   # a worker borrows them (arguments)

        assert ray.get(first_of.remote([ray.put(np.full(4, 3.0)) for _ in range(200)])) == 3.0


# == stored once ================================================================
def test_large_argument_by_value_is_stored_per_call_but_put_once(ray_start):
    # The seed's example: np.zeros(10**6) passed 10 times by value is put 10
    # times; put once with ray.put, all 10 tasks share one object.
    @ray.remote
    def f(x):
        return x.shape

    array = np.zeros(10 ** 6)
    before = store_stats()
    assert ray.get([f.remote(array) for _ in range(10)]) == [(10 ** 6,)] * 10
    by_value = store_stats()
    assert by_value["created_objects"] - before["created_objects"] == 10
    assert by_value["created_bytes"] - before["created_bytes"] >= 10 * array.nbytes

    array_ref = ray.put(array)
    assert ray.get([f.remote(array_ref) for _ in range(10)]) == [(10 ** 6,)] * 10
    by_ref = store_stats()
    assert by_ref["created_objects"] - by_value["created_objects"] == 1
    assert by_ref["created_bytes"] - by_value["created_bytes"] < 2 * array.nbytes
    # The by-value copies went with their tasks; the put one lives while referenced.
    assert by_ref["shm_objects"] == 1
    del array_ref
    assert wait_for(lambda: store_stats()["shm_objects"] == 0)


def wait_for(condition, timeout_s=10.0):
    """Poll a condition the node reaches asynchronously (refs are released
    one message later); True once it holds."""
    import time
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# == reference counting =========================================================
def test_put_drop_loop_keeps_store_small(start_ray):
    start_ray(object_store_memory=50 * MiB)
    array = np.ones(5 * MiB // 8)
    for _ in range(200):
        ref = ray.put(array)
        del ref
    stats = store_stats()
    assert stats["created_objects"] == 200
    assert stats["shm_bytes"] == 0 and stats["objects"] == 0
    assert stats["spilled_objects"] == 0


@pytest.mark.slow
def test_put_drop_50mb_1000_times_under_500mb(start_ray):
    info = start_ray(object_store_memory=500 * MiB)
    array = np.ones(50 * MiB // 8)
    for _ in range(1000):
        ref = ray.put(array)
        del ref
    stats = store_stats()
    assert stats["created_objects"] == 1000
    assert stats["shm_bytes"] == 0 and stats["spilled_objects"] == 0
    assert stats["arena_used_bytes"] == 0
    # One arena chunk, no file per object.
    assert [f for f in os.listdir("/dev/shm") if f.startswith(f"zray-{info['session_name']}-")] \
        == [f"zray-{info['session_name']}-arena-0"]


# == capacity and spilling ======================================================
def test_full_store_spills_oldest_and_restores_on_get(start_ray):
    info = start_ray(object_store_memory=64 * MiB)
    refs = [ray.put(np.full(16 * MiB // 8, i, dtype=np.float64)) for i in range(8)]
    # Copies to disk finish in the background; until then memory runs over by them.
    assert wait_for(lambda: store_stats()["spilling_bytes"] == 0)
    stats = store_stats()
    assert stats["shm_bytes"] <= 64 * MiB
    assert stats["spilled_objects"] >= 4
    spilled = set(os.listdir(stats["spill_dir"]))
    # Oldest first: the first object is on disk, the last one in memory.
    assert os.path.basename(object_file(info, refs[0])) in spilled
    assert stored(refs[-1])["where"] == "shm"
    for i, ref in enumerate(refs):
        value = ray.get(ref)
        assert value.shape == (16 * MiB // 8,) and (value == i).all()
        assert not value.flags.writeable
    del value

    @ray.remote
    def first(x):
        return float(x[0]), float(x[-1])

    assert ray.get([first.remote(r) for r in refs]) == [(float(i), float(i)) for i in range(8)]
    del refs, ref
    assert wait_for(lambda: store_stats()["objects"] == 0)
    stats = store_stats()
    assert stats["shm_bytes"] == 0 and stats["spilled_bytes"] == 0
    assert os.listdir(stats["spill_dir"]) == []


def test_store_full_when_disk_cannot_take_spill(start_ray):
    info = start_ray(object_store_memory=40 * MiB)
    spill_dir = store_stats()["spill_dir"]
    with open(spill_dir, "w"):      # a file where the spill directory should go
        pass
    kept = [ray.put(np.full(16 * MiB // 8, i, dtype=np.float64)) for i in range(2)]
    with pytest.raises(ObjectStoreFullError) as caught:
        ray.put(np.zeros(16 * MiB // 8))
    message = str(caught.value)
    assert "16.0 MiB" in message and "40.0 MiB" in message and spill_dir in message
    assert "object_store_memory" in message
    assert isinstance(caught.value, MemoryError)
    # Nothing referenced was lost, and the failed put left no file behind.
    assert [float(ray.get(r)[0]) for r in kept] == [0.0, 1.0]
    assert [f for f in os.listdir("/dev/shm")
            if f.startswith(f"zray-{info['session_name']}-")] == [f"zray-{info['session_name']}-arena-0"]
    stats = store_stats()
    assert stats["reserved_bytes"] == 0
    assert 0 <= stats["arena_used_bytes"] - sum(stored(r)["size"] for r in kept) < 2 * 4096
    os.unlink(spill_dir)           # the disk can take it again
    late = ray.put(np.full(16 * MiB // 8, 9.0))
    assert float(ray.get(late)[0]) == 9.0
    assert wait_for(lambda: store_stats()["spilled_objects"] >= 1)


def test_object_bigger_than_store_goes_to_disk(start_ray):
    start_ray(object_store_memory=8 * MiB)

    @ray.remote
    def big(i):
        return np.full(16 * MiB // 8, i, dtype=np.float64)

    refs = [big.remote(3), ray.put(np.full(16 * MiB // 8, 5.0))]
    result, put = ray.get(refs)
    assert (result == 3).all() and (put == 5).all()
    spill_dir = store_stats()["spill_dir"]
    for value in (result, put):        # zero-copy views of the files on disk
        path, permissions = mapping_of(value.ctypes.data)
        assert os.path.dirname(path) == spill_dir and permissions.startswith("r-")
    stats = store_stats()
    assert stats["shm_bytes"] == 0 and stats["spilled_objects"] == 2
    del result, put, refs
    assert wait_for(lambda: store_stats()["objects"] == 0)
    assert os.listdir(spill_dir) == []


def test_object_spilling_directory_is_honoured(start_ray, tmp_path):
    spill_dir = tmp_path / "spill here"
    info = start_ray(object_store_memory=32 * MiB, object_spilling_directory=str(spill_dir))
    assert store_stats()["spill_dir"] == str(spill_dir)
    refs = [ray.put(np.full(12 * MiB // 8, i, dtype=np.float64)) for i in range(4)]
    refs.append(ray.put(np.zeros(40 * MiB // 8)))      # bigger than the store
    assert wait_for(lambda: store_stats()["spilled_objects"] >= 2)
    names = os.listdir(spill_dir)
    assert os.path.basename(object_file(info, refs[0])) in names
    assert os.path.basename(object_file(info, refs[-1])) in names
    assert [float(ray.get(r)[0]) for r in refs] == [0.0, 1.0, 2.0, 3.0, 0.0]
    ray.shutdown()
    assert os.listdir(spill_dir) == []


def test_object_spilling_directory_must_be_usable(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="object_spilling_directory"):
        ray.init(num_cpus=1, object_spilling_directory=str(tmp_path / "file" / "spill"))
    assert not ray.is_initialized()


# == options ====================================================================
def test_plasma_directory_holds_the_objects(start_ray, tmp_path):
    start_ray(plasma_directory=str(tmp_path))
    ref = ray.put(np.arange(MiB // 8))
    path = stored(ref)["path"]
    assert os.path.dirname(path) == str(tmp_path) and os.path.exists(path)
    value = ray.get(ref)
    assert mapping_of(value.ctypes.data)[0] == path and not value.flags.writeable
    del value, ref
    ray.shutdown()
    assert os.listdir(tmp_path) == []


def test_huge_pages_refused_where_not_hugetlbfs(tmp_path):
    with pytest.raises(ValueError, match="hugetlbfs"):
        ray.init(num_cpus=1, huge_pages=True)
    with pytest.raises(ValueError, match="hugetlbfs"):
        ray.init(num_cpus=1, huge_pages=True, plasma_directory=str(tmp_path))
    assert not ray.is_initialized()
    assert not shm.is_hugetlbfs(str(tmp_path)) and not shm.is_hugetlbfs("/dev/shm")


def _hugetlbfs_mount():
    with open("/proc/mounts") as mounts:
        for line in mounts:
            parts = line.split()
            if parts[2] == "hugetlbfs" and os.access(parts[1], os.W_OK):
                return parts[1]
    return None


@pytest.mark.skipif(_hugetlbfs_mount() is None, reason="no writable hugetlbfs mount")
def test_huge_pages_on_hugetlbfs(start_ray):
    start_ray(plasma_directory=_hugetlbfs_mount(), huge_pages=True, object_store_memory=64 * MiB)
    value = ray.get(ray.put(np.arange(MiB)))
    assert value[-1] == MiB - 1


def test_mapped_writer_makes_the_same_file(tmp_path):
    # hugetlbfs has no write(2): objects there are written through a mapping.
    # Same bytes either way; checked here on an ordinary file system.
    data = serialize({"a": np.arange(10_000), "b": b"x" * 5000})
    views = [memoryview(b).cast("B") for b in data.buffers]
    header_room, offsets, size = shm.layout(len(data.meta), [v.nbytes for v in views])
    plain = tmp_path / "plain"
    assert shm.write_object(str(plain), data.meta, data.buffers) == size
    mapped = tmp_path / "mapped"
    prefix = plain.read_bytes()[:header_room]
    fd = os.open(mapped, os.O_RDWR | os.O_CREAT)
    try:
        shm._write_mapped(fd, [(0, prefix)] + list(zip(offsets, [data.meta] + views)), size)
    finally:
        os.close(fd)
    assert mapped.read_bytes()[:size] == plain.read_bytes()[:size]
    meta, buffers, is_error = shm.read_object(str(mapped))
    assert bytes(meta) == data.meta and not is_error
    assert [bytes(b) for b in buffers] == [bytes(v) for v in views]


# == the store's state machine, without sockets ==================================
def _disk(tmp_path):
    return SpillDisk(str(tmp_path), "t")            # arena chunks in tmp_path, session "t"


def spilled_name(object_id):
    return shm.object_file_name("t", object_id)


def _sealed_file(directory, name, size):
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return path


def test_object_table_reserve_spill_free(tmp_path):
    memory, spill = tmp_path / "mem", tmp_path / "spill"
    memory.mkdir()
    table = ObjectTable(capacity_bytes=3000, spill_dir=str(spill), disk=_disk(tmp_path))
    ids = [bytes([i]) * 20 for i in range(4)]
    paths = []
    for object_id in ids[:3]:
        table.expect(object_id).refcount = 1
        table.reserve(object_id, 1000, owner=b"w1")
        path = _sealed_file(memory, object_id.hex(), 1000)
        paths.append(path)
        table.seal((object_id, P.SHM, 0, (path, 1000), (), False), [])
    assert table.shm_bytes == 3000 and table.reserved_bytes == 0
    contents = open(paths[0], "rb").read()
    table.expect(ids[3]).refcount = 1
    assert table.reserve(ids[3], 1500, owner=b"w2") == IN_MEMORY     # needs two spills
    # The copies run in a thread; until the loop applies them the originals stay.
    assert table.spilling_bytes == 2000 and os.path.exists(paths[0])
    assert table.get(ids[0]).location == (paths[0], 1000)
    table.finish_spills(wait=True)
    assert table.reserved_bytes == 1500 and table.shm_bytes == 1000
    assert table.spilling_bytes == 0
    assert sorted(os.listdir(spill)) == sorted(spilled_name(i) for i in ids[:2])
    assert not os.path.exists(paths[0])
    assert open(spill / spilled_name(ids[0]), "rb").read() == contents
    assert table.get(ids[0]).location == (str(spill / spilled_name(ids[0])), 1000)
    table.release_reservations_of(b"w2")            # the writer died before sealing
    assert table.reserved_bytes == 0
    table.remove_ref(ids[0])
    assert not (spill / spilled_name(ids[0])).exists() and table.spilled_bytes == 1000
    assert table.reserve(ids[3], 4000) == ON_DISK     # bigger than the store: to disk
    assert table.disk_reserved_bytes == 4000 and table.reserved_bytes == 0
    on_disk = _sealed_file(spill, shm.object_file_name("s", ids[3]), 4000)
    table.seal((ids[3], P.SHM, 0, (on_disk, 4000), (), False), [])
    assert table.disk_reserved_bytes == 0 and table.spilled_bytes == 5000
    table.remove_ref(ids[3])
    assert not os.path.exists(on_disk) and table.spilled_bytes == 1000
    rows = {r["object_id"]: r for r in table.listing({ids[1]: ["driver pid 1"]})}
    assert rows[ids[1].hex()]["where"] == "spilled"
    assert rows[ids[1].hex()]["holders"] == ["driver pid 1"]
    assert rows[ids[2].hex()]["where"] == "shm"
    table.unlink_all()


def test_object_table_disk_full_names_sizes_and_paths(tmp_path):
    table = ObjectTable(capacity_bytes=1000, spill_dir=str(tmp_path / "spill"), disk=_disk(tmp_path))
    too_big = shm.free_bytes(str(tmp_path)) + (1 << 30)
    with pytest.raises(ObjectStoreFullError) as caught:
        table.reserve(b"a" * 20, too_big)
    message = str(caught.value)
    assert "larger than the whole object store (1000 B)" in message
    assert str(tmp_path / "spill") in message and "free" in message
    assert table.disk_reserved_bytes == 0 and table.reserved == {}
    table.unlink_all()


def test_object_table_spill_freed_in_flight_or_failed(tmp_path):
    memory, spill = tmp_path / "mem", tmp_path / "spill"
    memory.mkdir()
    table = ObjectTable(capacity_bytes=2000, spill_dir=str(spill), disk=_disk(tmp_path))
    ids = [bytes([i]) * 20 for i in range(3)]
    paths = [_sealed_file(memory, i.hex(), 1000) for i in ids]
    # A directory where the copy of ids[1] should go: its rename fails.
    (spill / spilled_name(ids[1]) / "x").mkdir(parents=True)
    for object_id, path in zip(ids[:2], paths):
        table.expect(object_id).refcount = 1
        table.seal((object_id, P.SHM, 0, (path, 1000), (), False), [])
    table.expect(ids[2]).refcount = 1
    assert table.reserve(ids[2], 2000) == IN_MEMORY      # spills both
    table.remove_ref(ids[0])                              # freed while being copied
    table.finish_spills(wait=True)
    assert not os.path.exists(paths[0]) and not (spill / spilled_name(ids[0])).exists()
    # The failed copy left the object in memory, readable, and said why.
    assert table.get(ids[1]).location == (paths[1], 1000) and os.path.exists(paths[1])
    assert table.shm_bytes == 1000 and table.spilling_bytes == 0
    assert "it stays in memory" in table.spill_failure
    assert next(iter(table.in_memory)) == ids[1]
    assert not [n for n in os.listdir(spill) if n.endswith(".partial")]
    table.unlink_all()


def test_object_table_reports_why_it_is_full(tmp_path):
    (tmp_path / "spill").write_text("not a directory")
    table = ObjectTable(capacity_bytes=2000, spill_dir=str(tmp_path / "spill"), disk=_disk(tmp_path))
    table.expect(b"a" * 20).refcount = 1
    path = _sealed_file(tmp_path, "a", 1500)
    table.seal((b"a" * 20, P.SHM, 0, (path, 1500), (), False), [])
    with pytest.raises(ObjectStoreFullError) as caught:
        table.reserve(b"b" * 20, 1000)
    message = str(caught.value)
    assert "1000 B" in message and "1.5 KiB" in message and "2.0 KiB" in message
    assert "spilling the oldest object" in message
    assert os.path.exists(path) and table.shm_bytes == 1500 and table.reserved_bytes == 0
    table.unlink_all()


# == zray memory ================================================================
def test_zray_memory_lists_objects_and_holders(start_ray):
    info = start_ray(object_store_memory=32 * MiB)
    refs = [ray.put(np.zeros(12 * MiB // 8)) for _ in range(3)]
    small = ray.put("small")
    assert wait_for(lambda: store_stats()["spilling_bytes"] == 0)
    text = memory_summary(info["node_address"])
    lines = text.splitlines()
    for ref in refs + [small]:
        (row,) = [line for line in lines if line.startswith(ref.hex())]
        assert f"driver pid {os.getpid()}" in row
    assert "spilled" in [line for line in lines if line.startswith(refs[0].hex())][0]
    assert "shm" in [line for line in lines if line.startswith(refs[-1].hex())][0]
    assert "inline" in [line for line in lines if line.startswith(small.hex())][0]
    assert "12.0 MiB" in text and "32.0 MiB" in text

    from zray.cli import main
    result = CliRunner().invoke(main, ["memory", "--address", info["address"]])
    assert result.exit_code == 0, result.output
    assert refs[0].hex() in result.output and small.hex() in result.output


# == the arena: blocks of one chunk, reused ======================================
def test_arena_first_fit_merges_free_neighbours():
    from zray.plasma.arena import ALIGN, Arena
    made = []
    arena = Arena(8 * MiB, lambda index, size: made.append(size) or f"/chunk{index}")
    a, b, c = (arena.allocate(MiB) for _ in range(3))
    assert made == [8 * MiB] and [a[1], b[1], c[1]] == [0, MiB, 2 * MiB]
    assert arena.allocate(6 * MiB) is None                # 5 MiB left, in one piece
    arena.free(a[0], a[1], MiB)
    arena.free(b[0], b[1], MiB)                           # merges with a's range
    assert arena.allocate(2 * MiB) == ("/chunk0", 0)
    arena.free("/chunk0", 0, 2 * MiB)
    arena.free(c[0], c[1], MiB)
    assert arena.used_bytes() == 0 and arena.allocate(8 * MiB) == ("/chunk0", 0)
    arena.free("/chunk0", 0, 8 * MiB)
    with pytest.raises(ValueError, match="already free"):
        arena.free("/chunk0", 0, ALIGN)
    assert not arena.contains("/chunk0", 8 * MiB - 10, 11) and arena.contains("/chunk0", 0, 10)


class ClockedDisk(SpillDisk):
    """A real SpillDisk whose clock the test sets (for the release delay)."""

    def __init__(self, directory):
        super().__init__(directory, "t")
        self.clock = 0.0
        self.page_allocations = []

    def now(self):
        return self.clock

    def allocate_pages(self, path, offset, size):
        self.page_allocations.append((offset, size))
        super().allocate_pages(path, offset, size)


def test_arena_keeps_a_freed_blocks_pages_a_while_then_releases_them(tmp_path):
    from zray.plasma.arena import RELEASE_AFTER_S
    disk = ClockedDisk(str(tmp_path))
    table = ObjectTable(capacity_bytes=16 * MiB, spill_dir=str(tmp_path / "spill"), disk=disk)

    def allocated():
        return os.stat(table.arena.paths()[0]).st_blocks * 512

    a, b, c = b"a" * 20, b"b" * 20, b"c" * 20
    where_a = _arena_object(table, tmp_path, a, 4 * MiB, 1)
    assert disk.page_allocations == [(0, 4 * MiB)] and allocated() >= 4 * MiB
    table.remove_ref(a)
    disk.clock += RELEASE_AFTER_S / 2
    table.release_idle_pages()                  # not idle long enough: pages stay
    assert allocated() >= 4 * MiB
    where_b = _arena_object(table, tmp_path, b, 4 * MiB, 2)
    assert where_b == where_a and disk.page_allocations == [(0, 4 * MiB)]   # no new pages
    table.remove_ref(b)
    disk.clock += RELEASE_AFTER_S
    table.release_idle_pages()
    assert allocated() < MiB and table.stats()["arena_resident_bytes"] == 0
    # Pages come back (fallocated before the writer gets the block) where needed.
    _arena_object(table, tmp_path, c, 2 * MiB, 3)
    assert disk.page_allocations[1:] == [(0, 2 * MiB)] and allocated() >= 2 * MiB
    assert table.stats()["arena_resident_bytes"] == 2 * MiB
    # A chunk that cannot be punched (here: gone) leaves its pages counted; no raise.
    os.unlink(table.arena.paths()[0])
    table.remove_ref(c)
    disk.clock += RELEASE_AFTER_S
    table.release_idle_pages()
    assert table.stats()["arena_resident_bytes"] == 2 * MiB
    table.unlink_all()


def test_arena_release_skips_what_was_reused_meanwhile():
    from zray.plasma.arena import Arena
    arena = Arena(8 * MiB, lambda index, size: f"/chunk{index}")
    path, offset = arena.allocate(4 * MiB)
    arena.by_path[path].take_holes(offset, offset + 4 * MiB)     # its pages
    arena.free(path, offset, 4 * MiB, now=0.0)
    assert arena.allocate(MiB) == (path, 0)                      # the first MiB again
    assert arena.idle_ranges(now=100.0) == [(path, MiB, 4 * MiB)]
    arena.released(path, MiB, 4 * MiB)
    assert arena.resident_bytes() == MiB and arena.idle_ranges(now=200.0) == []


def test_arena_pages_and_idle_ranges_agree_with_a_page_by_page_model():
    import random
    from zray.plasma.arena import ALIGN, Arena
    pages = 64
    arena = Arena(pages * ALIGN, lambda index, size: f"/chunk{index}")
    rng = random.Random(7)
    live, resident, now = {}, set(), 0.0          # the model: which pages have pages
    for _ in range(3000):
        now += rng.random()
        action = rng.random()
        if action < 0.45:
            size = rng.randint(1, 8) * ALIGN
            block = arena.allocate(size)
            if block is None:
                continue
            chunk = arena.by_path[block[0]]
            given = chunk.take_holes(block[1], block[1] + size)     # as the node fallocates
            wanted = set(range(block[1] // ALIGN, (block[1] + size) // ALIGN))
            assert {p for s, e in given for p in range(s // ALIGN, e // ALIGN)} == \
                wanted - resident
            resident |= wanted
            live[block[1]] = size
        elif action < 0.85 and live:
            offset = rng.choice(sorted(live))
            arena.free("/chunk0", offset, live.pop(offset), now)
        else:
            for _, start, end in arena.idle_ranges(now, after=2.0):
                pages_of = set(range(start // ALIGN, end // ALIGN))
                assert not any(o // ALIGN <= p < (o + n) // ALIGN   # never a live block's
                               for o, n in live.items() for p in pages_of)
                resident -= pages_of
                arena.released("/chunk0", start, end)
        assert arena.resident_bytes() == len(resident) * ALIGN


def _arena_object(table, tmp_path, object_id, size, fill):
    """Reserve an arena block, write ``fill`` bytes into it, seal it."""
    table.expect(object_id).refcount = 1
    location = table.reserve(object_id, size, owner=b"c1", arena=True)
    assert isinstance(location, tuple) and os.path.dirname(location[0]) == str(tmp_path)
    fd = os.open(location[0], os.O_RDWR)
    os.pwrite(fd, bytes([fill]) * size, location[2])
    os.close(fd)
    table.seal((object_id, P.SHM, 0, location, (), False), [])
    return location


def test_object_table_arena_pins_keep_blocks(tmp_path):
    table = ObjectTable(capacity_bytes=8 * MiB, spill_dir=str(tmp_path / "spill"),
                        disk=_disk(tmp_path))
    a, b = b"a" * 20, b"b" * 20
    where_a = _arena_object(table, tmp_path, a, MiB, 1)
    assert table.reserved_location(a, b"c1") is None       # sealed: no longer reserved
    assert table.pin(a, b"reader") == where_a
    table.remove_ref(a)                                     # freed while a reader views it
    assert table.get(a) is None and table.arena.used_bytes() == MiB
    where_b = _arena_object(table, tmp_path, b, MiB, 2)
    assert where_b[2] != where_a[2]                         # not a's pages
    table.release_pins_of(b"reader")                        # the reader left
    assert table.arena.used_bytes() == MiB and table.pins == {}
    # A reservation given up frees its block; the next one reuses it.
    table.expect(a).refcount = 1
    again = table.reserve(a, MiB, owner=b"c2", arena=True)
    assert again[2] == where_a[2] and table.reserved_location(a, b"c2") == again
    assert table.reserved_location(a, b"c1") is None       # another client's block
    table.release_reservations_of(b"c2")
    assert table.arena.used_bytes() == MiB
    table.unlink_all()
    assert [n for n in os.listdir(tmp_path) if "arena" in n] == []


def test_object_table_spills_arena_objects(tmp_path):
    spill = tmp_path / "spill"
    table = ObjectTable(capacity_bytes=3 * MiB, spill_dir=str(spill), disk=_disk(tmp_path))
    ids = [bytes([i]) * 20 for i in range(4)]
    _arena_object(table, tmp_path, ids[0], MiB, 7)
    _arena_object(table, tmp_path, ids[1], MiB, 8)
    table.expect(ids[2]).refcount = 1
    table.reserve(ids[2], 2 * MiB, owner=b"c1", arena=True)      # spills ids[0]
    assert ids[0] in table.spilling
    table.finish_spills(wait=True)
    entry = table.get(ids[0])
    assert entry.spilled and entry.location == (str(spill / spilled_name(ids[0])), MiB)
    assert open(entry.location[0], "rb").read() == bytes([7]) * MiB
    table.release_reservation(ids[2])
    assert table.arena.used_bytes() == MiB                       # ids[0]'s block is free
    # Pinned while its copy is made: the copy is dropped, it stays in memory.
    assert table.pin(ids[1], b"reader") is not None
    table.expect(ids[3]).refcount = 1
    assert table.reserve(ids[3], 5 * MiB // 2, owner=b"c1") == ON_DISK
    assert ids[1] not in table.spilling                          # pinned: never picked
    table.release_reservation(ids[3])
    table.unpin(ids[1], b"reader")
    table.reserve(ids[3], 5 * MiB // 2, owner=b"c1")             # now it is spilled
    assert ids[1] in table.spilling
    table.pin(ids[1], b"reader")                                 # mapped meanwhile
    table.finish_spills(wait=True)
    assert not table.get(ids[1]).spilled and ids[1] in table.in_memory
    assert not (spill / spilled_name(ids[1])).exists()
    table.unpin(ids[1], b"reader")
    table.release_reservation(ids[3])
    # Freed while being copied: the block is given back once the copy is done.
    table.reserve(ids[3], 5 * MiB // 2, owner=b"c1")
    assert ids[1] in table.spilling
    table.remove_ref(ids[1])
    assert table.arena.used_bytes() == MiB
    table.finish_spills(wait=True)
    assert table.arena.used_bytes() == 0 and not (spill / spilled_name(ids[1])).exists()
    table.release_reservation(ids[3])
    table.remove_ref(ids[0])
    assert os.listdir(spill) == []
    table.unlink_all()
    assert [n for n in os.listdir(tmp_path) if "arena" in n] == []
