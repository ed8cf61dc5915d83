"""Pins kept while a ref is held: a process that read an arena object keeps
its block pinned as long as it holds a ref, so the next get asks the node
nothing. The node still reuses a block only once no value views it, may
spill a block no value views (and then asks for the pin back), never one in
use, and nothing stays mapped after shutdown.
"""
import os

import numpy as np
import pytest

import zray as ray
from conftest import assert_no_leftovers
from test_object_store import in_block, mapping_of, store_stats, stored, wait_for

MiB = 1024 ** 2


@pytest.fixture
def start_ray():
    infos = []

    def start(**options):
        infos.append(ray.init(num_cpus=1, **options))
        return infos[-1]
    yield start
    ray.shutdown()
    for info in infos:
        assert_no_leftovers(info)


def requests_sent_by(action):
    """How many requests the driver sent to its node while ``action`` ran."""
    request_ids = ray.api._runtime().connection.request_ids
    before = next(request_ids)
    result = action()
    return next(request_ids) - before - 1, result


def test_second_get_of_a_held_object_asks_the_node_nothing(start_ray):
    start_ray()
    ref = ray.put(np.full(4 * MiB // 8, 3.0))
    value = ray.get(ref)
    assert in_block(value, stored(ref))
    del value
    # No value views the block, but the ref lives: the pin stays, marked idle.
    assert wait_for(lambda: store_stats()["idle_pinned_objects"] == 1)
    assert store_stats()["pinned_objects"] == 1
    asked, value = requests_sent_by(lambda: ray.get(ref))
    assert asked == 0
    assert (value == 3.0).all() and not value.flags.writeable
    assert in_block(value, stored(ref))
    # The node hears it is in use again (so it will not spill it).
    assert wait_for(lambda: store_stats()["idle_pinned_objects"] == 0)
    assert store_stats()["pinned_objects"] == 1
    del value
    ref = None          # (the lambda above reads it: rebound, not deleted)
    assert wait_for(lambda: store_stats()["pinned_objects"] == 0)
    assert wait_for(lambda: store_stats()["objects"] == 0)


def test_idle_pin_is_spilled_and_read_back_from_disk(start_ray):
    start_ray(object_store_memory=64 * MiB)
    oldest = ray.put(np.full(16 * MiB // 8, 1.0))
    assert (ray.get(oldest) == 1.0).all()      # read once: kept pinned, idle
    assert wait_for(lambda: store_stats()["idle_pinned_objects"] == 1)
    refs = [ray.put(np.full(16 * MiB // 8, float(i))) for i in range(2, 6)]
    # The oldest object goes to disk, though this process keeps a pin on
    # it: the node asks for the pin back, and the driver lets go.
    assert wait_for(lambda: stored(oldest)["where"] == "spilled")
    assert wait_for(lambda: store_stats()["pinned_objects"] == 0)
    value = ray.get(oldest)
    assert (value == 1.0).all()
    path, permissions = mapping_of(value.ctypes.data)
    assert os.path.dirname(path) == store_stats()["spill_dir"] and permissions.startswith("r-")
    assert [float(ray.get(r)[0]) for r in refs] == [2.0, 3.0, 4.0, 5.0]


def test_pin_in_use_again_keeps_the_object_in_memory(start_ray):
    start_ray(object_store_memory=64 * MiB)
    used = ray.put(np.full(16 * MiB // 8, 1.0))
    value = ray.get(used)
    del value
    assert wait_for(lambda: store_stats()["idle_pinned_objects"] == 1)
    value = ray.get(used)                      # from the kept pin: the node is told
    assert wait_for(lambda: store_stats()["idle_pinned_objects"] == 0)
    refs = [ray.put(np.full(16 * MiB // 8, float(i))) for i in range(2, 7)]
    assert wait_for(lambda: store_stats()["spilled_objects"] >= 2)
    assert wait_for(lambda: store_stats()["spilling_bytes"] == 0)
    # Oldest, but a value views it: others went to disk instead.
    assert stored(used)["where"] == "shm"
    assert stored(refs[0])["where"] == "spilled"
    assert (value == 1.0).all() and in_block(value, stored(used))


def test_worker_lets_go_of_its_kept_pins_with_its_refs(start_ray):
    start_ray()

    @ray.remote
    def read_twice(refs):
        first = ray.get(refs[0])
        total = float(first.sum())
        del first
        return total + float(ray.get(refs[0]).sum())

    ref = ray.put(np.ones(4 * MiB // 8))
    assert ray.get(read_twice.remote([ref])) == 2 * (4 * MiB // 8)
    # The driver never read it; the worker dropped its borrowed ref.
    assert wait_for(lambda: store_stats()["pinned_objects"] == 0)
    assert stored(ref)["where"] == "shm"


def test_shutdown_unmaps_a_chunk_kept_for_a_live_ref():
    info = ray.init(num_cpus=1)
    try:
        ref = ray.put(np.full(4 * MiB // 8, 2.0))
        chunk = stored(ref)["path"]
        assert (ray.get(ref) == 2.0).all()
    finally:
        ray.shutdown()
    assert_no_leftovers(info)
    with open("/proc/self/maps") as maps:
        assert chunk not in maps.read()      # the ref outlived zray; the mapping did not
    del ref


# == the node's table: which pinned blocks may be spilled =======================
def test_table_spills_idle_pins_only_and_keeps_the_block_until_unpinned(tmp_path):
    from test_object_store import _arena_object, _disk
    from zray.plasma.store import ON_DISK, ObjectTable
    table = ObjectTable(capacity_bytes=8 * MiB, spill_dir=str(tmp_path / "spill"),
                        disk=_disk(tmp_path))
    a, b, c = b"a" * 20, b"b" * 20, b"c" * 20
    where_a = _arena_object(table, tmp_path, a, 4 * MiB, 1)
    assert table.pin(a, b"c1") == where_a
    # In use: never a victim; the next object goes to disk instead.
    table.expect(b).refcount = 1
    assert table.reserve(b, 6 * MiB, owner=b"c2") == ON_DISK
    assert table.get(a).location == where_a and not table.spilling
    table.release_reservation(b)
    # Idle (no value of c1 views it), then in use again: still no victim.
    table.pin_use(b"c1", [], [a])
    assert table.stats()["idle_pinned_objects"] == 1
    table.pin_use(b"c1", [a], [])
    assert table.reserve(b, 6 * MiB, owner=b"c2") == ON_DISK
    table.release_reservation(b)
    # Idle: spilled; c1 is asked for its pin, and the block stays taken
    # until it unpins (it may have viewed the block again meanwhile).
    table.pin_use(b"c1", [], [a])
    table.expect(c).refcount = 1
    table.reserve(c, 6 * MiB, owner=b"c2")
    table.finish_spills(wait=True)
    assert table.get(a).spilled and table.pins_to_drop == {b"c1": [a]}
    assert table.stats()["arena_used_bytes"] >= 4 * MiB
    table.unpin(a, b"c1")
    assert table.stats()["arena_used_bytes"] == 0 and table.stats()["pinned_objects"] == 0
    table.unlink_all()
