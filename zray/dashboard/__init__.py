"""The web dashboard: a live, read-only view of a cluster, served by the head.

::

    browser ── GET /?token=… , /api/<page> ──► DashboardServer (server.py, http.server)
                                                  │ views.py: snapshot -> page JSON
                                                  ▼
                                  ClusterReader (collect.py) ── kv service, every node

- ``python -m zray.dashboard`` runs it in a process of its own (``launch.py``
  starts it next to the kv service): a slow page or a big JSON answer never
  takes the GIL from the node's loop, and the dashboard can fail without
  touching the cluster. It exits with the head's node daemon.
- ``auth.py``: every route needs the cluster's token (``?token=`` once, then
  a cookie). ``static/``: the page, hand-written HTML/JS/CSS, no build step.
- The head publishes the page's URL (token included) in the kv under
  ``webui:url``; ``ray.get_webui_url()`` reads it there.
"""
