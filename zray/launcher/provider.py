"""Where a cluster's nodes come from: the provider interface, and ``local``.

A provider answers six questions for the commands in ``commands.py``::

    nodes(kind)             -> [node id]   the cluster's live nodes ("head"/"worker")
    create(kind, count)     -> [node id]   make (or claim) that many more
    terminate(node id)                     give one back
    address(node id)        -> host        where to ssh to
    run(node id, cmd, env)  -> (status, output)
    copy(node id, local, remote) -> (status, output)

``run`` and ``copy`` go over SSH (``ssh.py``) in this base class, so a cloud
provider is one more subclass that implements the first four with its API
(and records its nodes in ``cluster_record["nodes"]`` as ``local`` does).
"""
import os

from .ssh import SSHRunner


class NodeProvider:
    def __init__(self, config, cluster_record, known_hosts, owner_of):
        self.config = config
        self.provider_config = config["provider"]
        self.record = cluster_record      # this cluster's entry in the state file
        self.known_hosts = known_hosts
        self.owner_of = owner_of          # address -> name of the cluster holding it, or None

    # -- the part each provider implements --------------------------------------
    def nodes(self, kind=None):
        raise NotImplementedError

    def create(self, kind, count):
        raise NotImplementedError

    def terminate(self, node_id):
        raise NotImplementedError

    def address(self, node_id):
        raise NotImplementedError

    def is_configured(self, node_id):
        """False for a node the config no longer describes (up then removes it)."""
        return True

    # -- commands and files, over SSH ------------------------------------------
    def runner(self, node_id):
        return SSHRunner(self.address(node_id), self.config["auth"], self.known_hosts)

    def run(self, node_id, command, env=None, timeout_s=None):
        return self.runner(node_id).run(command, env=env, timeout_s=timeout_s)

    def copy(self, node_id, local, remote):
        return self.runner(node_id).copy(local, remote)


class LocalNodeProvider(NodeProvider):
    """Machines that already exist: ``provider.head_ip`` and ``provider.worker_ips``.

    Creating a node claims a host from the list that no cluster in the state
    file holds; terminating it releases the host (zray on it is stopped first
    by the caller). The node id is the host itself.
    """

    def nodes(self, kind=None):
        return [node_id for node_id, node in self.record["nodes"].items()
                if kind is None or node["kind"] == kind]

    def create(self, kind, count):
        if kind == "head":
            candidates = [self.provider_config["head_ip"]]
        else:
            candidates = list(self.provider_config["worker_ips"])
        made = []
        for host in candidates:
            if len(made) == count:
                break
            owner = self.owner_of(host)
            if owner is not None and owner != self.config["cluster_name"]:
                raise RuntimeError(f"host {host} belongs to cluster {owner!r}; bring that "
                                   f"one down first (`zray down` with its config)")
            if host in self.record["nodes"]:
                continue
            self.record["nodes"][host] = {"kind": kind, "address": host, "done": [],
                                          "start": None}
            made.append(host)
        if len(made) < count:
            raise RuntimeError(f"provider.worker_ips has no free host left for {count - len(made)}"
                               f" more {kind} node(s)")
        return made

    def terminate(self, node_id):
        self.record["nodes"].pop(node_id, None)

    def address(self, node_id):
        return self.record["nodes"][node_id]["address"]

    def is_configured(self, node_id):
        node = self.record["nodes"][node_id]
        if node["kind"] == "head":
            return node["address"] == self.provider_config["head_ip"]
        return node["address"] in self.provider_config["worker_ips"]


PROVIDER_TYPES = {"local": LocalNodeProvider}


def make_provider(config, cluster_record, state):
    known_hosts = os.path.join(state.directory, "known_hosts")
    provider_class = PROVIDER_TYPES[config["provider"]["type"]]
    return provider_class(config, cluster_record, known_hosts, state.owner_of)
