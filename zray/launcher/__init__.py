"""The cluster launcher: ``zray up / down / exec / attach / get_head_ip``.

::

    cluster.yaml ─config.py─► checked config ─commands.py─► provider.py ─ssh.py─► nodes
                  (key + line in                up, down,     nodes, create,  ssh, tar
                   every error)                 exec, ...     terminate,
                                                    │         address
                                                    ▼
                                      state.py: ~/.zray/clusters.json
                                      (which hosts, what ran: hashes)

- ``config.py``: Ray's cluster YAML checked against a small schema.
- ``provider.py``: the provider interface and ``local`` (hosts by address).
- ``ssh.py``: one ssh process per command or copy; key auth, BatchMode.
- ``updater.py``: one node's setup steps, re-run only from the first change.
- ``commands.py``: the five commands; ``cli.py``: their click wrappers.
"""
