"""Messages from a peer this node has not heard of yet, kept in order.

A node can hear of us (and send us work) before its own ``node:`` record
reaches us on the kv feed; a FORWARD from it needs to know which node it
is (its arguments are pulled from there). Its messages wait here until its
record comes (its heartbeat comes every ``HEARTBEAT_S``), or a deadline
passes. Asking the kv instead would block the node's loop for as long as
the kv takes to answer.
"""


class HeldMessages:
    def __init__(self, wait_s):
        self.wait_s = wait_s
        self.held = {}            # identity -> (deadline, [(msg_type, fields, payload)])
        self.released = set()     # identities whose wait ran out: never held again

    def hold(self, identity, msg_type, fields, payload, now):
        """Keep a message for later; False once this identity's wait is over."""
        held = self.held.get(identity)
        if held is None:
            if identity in self.released:
                return False
            held = self.held[identity] = (now + self.wait_s, [])
        held[1].append((msg_type, fields, payload))
        return True

    def __contains__(self, identity):
        return identity in self.held

    def of_node(self, node_id):
        """Identities of a node's inbound clients with messages held."""
        prefix = b"p" + node_id.encode()
        return [i for i in self.held if i.startswith(prefix)]

    def overdue(self, now):
        return [i for i, (deadline, _) in self.held.items() if deadline <= now]

    def release(self, identity, known):
        """The held messages of ``identity``, in order; ``known``: its node was
        heard of (if not, it is never held again)."""
        _, messages = self.held.pop(identity)
        if not known:
            self.released.add(identity)
        return messages
