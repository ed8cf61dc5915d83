"""The kv metadata service (``server``) and its client (``client``)."""
