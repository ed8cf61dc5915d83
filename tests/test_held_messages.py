"""Messages of a peer not heard of yet wait, in order, until its record
comes or their deadline passes (zray/sched/held_messages.py)."""
from zray.sched.held_messages import HeldMessages

PEER = b"p" + b"a" * 16 + b"n1"


def test_messages_wait_in_order_until_released():
    held = HeldMessages(wait_s=10)
    assert PEER not in held
    assert held.hold(PEER, "FORWARD", (1,), [b"x"], now=0.0)
    assert held.hold(PEER, "REMOVE_REF", (2,), [], now=1.0)
    assert PEER in held
    assert held.of_node("a" * 16) == [PEER] and held.of_node("b" * 16) == []
    assert held.release(PEER, known=True) == [("FORWARD", (1,), [b"x"]),
                                              ("REMOVE_REF", (2,), [])]
    assert PEER not in held
    assert held.hold(PEER, "FORWARD", (3,), [], now=2.0)     # known ones may wait again


def test_past_the_deadline_they_go_and_are_never_held_again():
    held = HeldMessages(wait_s=10)
    held.hold(PEER, "FORWARD", (1,), [], now=0.0)
    held.hold(PEER, "FORWARD", (2,), [], now=9.0)             # the first message's deadline
    assert held.overdue(9.9) == []
    assert held.overdue(10.0) == [PEER]
    assert len(held.release(PEER, known=False)) == 2
    assert not held.hold(PEER, "FORWARD", (3,), [], now=11.0)
    assert PEER not in held
