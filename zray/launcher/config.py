"""Reading a Ray cluster YAML: load it, check every key, fill the defaults.

A mistake is reported as ``ConfigError`` naming the key's full path and the
line it is on (from the YAML node marks), e.g.
``cluster.yaml:7: provider.worker_ips: expected a list of strings, got 'a'``.
Keys Ray knows but that only steer its autoscaler are accepted and ignored,
so an existing Ray config loads unchanged.
"""
import os

DEFAULT_HEAD_START = ["zray stop",
                      "zray start --head --port=6379 --node-ip-address=$ZRAY_HEAD_IP "
                      "--redis-password=$ZRAY_CLUSTER_TOKEN"]
DEFAULT_WORKER_START = ["zray stop",
                        "zray start --address=$ZRAY_HEAD_IP:6379 "
                        "--redis-password=$ZRAY_CLUSTER_TOKEN"]
DEFAULT_STOP = ["zray stop"]

# Ray keys for its autoscaler and docker-less sync tuning: no meaning here.
IGNORED_KEYS = ("upscaling_speed", "idle_timeout_minutes", "metadata", "cluster_synced_files",
                "file_mounts_sync_continuously", "rsync_exclude", "rsync_filter",
                "no_restart", "head_node_type")
UNSUPPORTED_KEYS = {
    "docker": "running nodes in docker containers is not supported by zray's launcher; "
              "remove the section and install zray on the hosts",
    "available_node_types": "node types are not supported by zray's launcher; use "
                            "min_workers/max_workers and the provider's worker_ips",
}


class ConfigError(ValueError):
    """A cluster config that cannot be used; the message names key and line."""


class _Spec:
    """What one key may hold: ``kind`` is str, int, bool, "commands", "strings",
    "mapping" (str -> str) or a dict of sub-keys (a section)."""

    def __init__(self, kind, required=False, default=None):
        self.kind, self.required, self.default = kind, required, default


_COMMANDS = _Spec("commands", default=[])
SCHEMA = {
    "cluster_name": _Spec(str, required=True),
    "min_workers": _Spec(int),
    "max_workers": _Spec(int),
    "provider": _Spec({
        "type": _Spec(str, required=True),
        "head_ip": _Spec(str),
        "worker_ips": _Spec("strings", default=[]),
        # Cloud keys a Ray config may carry; a cloud provider class reads them.
        "region": _Spec(str), "availability_zone": _Spec(str), "module": _Spec(str),
        "use_internal_ips": _Spec(bool), "cache_stopped_nodes": _Spec(bool),
    }, required=True),
    "auth": _Spec({
        "ssh_user": _Spec(str, required=True),
        "ssh_private_key": _Spec(str),
        "ssh_public_key": _Spec(str),
        "ssh_port": _Spec(int, default=22),     # zray: sshd on another port
        "ssh_proxy_command": _Spec(str),
    }, required=True),
    "file_mounts": _Spec("mapping", default={}),
    "initialization_commands": _COMMANDS,
    "setup_commands": _COMMANDS,
    "head_setup_commands": _COMMANDS,
    "worker_setup_commands": _COMMANDS,
    "head_start_ray_commands": _Spec("commands", default=DEFAULT_HEAD_START),
    "worker_start_ray_commands": _Spec("commands", default=DEFAULT_WORKER_START),
    # zray: how `zray down` stops a node (Ray has no key for it).
    "head_stop_ray_commands": _Spec("commands", default=DEFAULT_STOP),
    "worker_stop_ray_commands": _Spec("commands", default=DEFAULT_STOP),
}

_KIND_NAMES = {str: "a string", int: "an integer", bool: "true or false",
               "commands": "a list of shell commands (strings)",
               "strings": "a list of strings", "mapping": "a mapping of remote path: local path"}


def load_config(path):
    """Parse and check the YAML file at ``path``; return the config dict with
    defaults filled in. Raises ConfigError (or OSError if unreadable)."""
    import yaml
    with open(path) as f:
        text = f.read()
    where = os.path.basename(path)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    if root is None:
        raise ConfigError(f"{where}: the file is empty; a cluster config needs at least "
                          f"cluster_name, provider and auth")
    config = _check_section(root, SCHEMA, (), where)
    _check_workers(config, root, where)
    config["config_path"] = os.path.abspath(path)
    return config


def _line(node):
    return node.start_mark.line + 1


def _fail(where, node, path, message):
    key = ".".join(path).replace(".[", "[") if path else "the top level"
    raise ConfigError(f"{where}:{_line(node)}: {key}: {message}")


def _check_section(node, schema, path, where):
    import yaml
    if not isinstance(node, yaml.MappingNode):
        _fail(where, node, path, f"expected a mapping of keys, got {_show(node)}")
    seen, out = {}, {}
    for key_node, value_node in node.value:
        key = key_node.value
        key_path = path + (str(key),)
        if key in seen:
            _fail(where, key_node, key_path, f"given twice (first on line {seen[key]})")
        seen[key] = _line(key_node)
        if not path and key in UNSUPPORTED_KEYS:
            _fail(where, key_node, key_path, UNSUPPORTED_KEYS[key])
        if not path and key in IGNORED_KEYS:
            continue
        if key not in schema:
            close = ", ".join(sorted(k for k in schema if not k.startswith("_")))
            _fail(where, key_node, key_path, f"unknown key (known here: {close})")
        out[key] = _check_value(value_node, schema[key], key_path, where)
    for key, spec in schema.items():
        if key in out:
            continue
        if spec.required:
            _fail(where, node, path + (key,), "required key is missing")
        if isinstance(spec.kind, dict):
            continue
        out[key] = list(spec.default) if isinstance(spec.default, list) else (
            dict(spec.default) if isinstance(spec.default, dict) else spec.default)
    return out


def _check_value(node, spec, path, where):
    import yaml
    kind = spec.kind
    if isinstance(kind, dict):
        return _check_section(node, kind, path, where)
    if kind in ("commands", "strings"):
        if _is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            _fail(where, node, path, f"expected {_KIND_NAMES[kind]}, got {_show(node)}")
        return [_scalar(item, str, path + (f"[{i}]",), where, _KIND_NAMES[kind])
                for i, item in enumerate(node.value)]
    if kind == "mapping":
        if _is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            _fail(where, node, path, f"expected {_KIND_NAMES[kind]}, got {_show(node)}")
        return {_scalar(k, str, path, where, "a string path"):
                _scalar(v, str, path + (str(k.value),), where, "a local path (string)")
                for k, v in node.value}
    return _scalar(node, kind, path, where, _KIND_NAMES[kind])


def _scalar(node, kind, path, where, expected):
    import yaml
    if not isinstance(node, yaml.ScalarNode):
        _fail(where, node, path, f"expected {expected}, got {_show(node)}")
    value = yaml.SafeLoader("").construct_object(node)
    if kind is str and node.tag.endswith((":int", ":float")):
        value = str(value)       # a numeric-looking string (a host, a path) is still fine
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        _fail(where, node, path, f"expected {expected} >= 0, got {_show(node)}")
    if not isinstance(value, kind):
        _fail(where, node, path, f"expected {expected}, got {_show(node)}")
    return value


def _is_null(node):
    return node.tag.endswith(":null")


def _show(node):
    import yaml
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return repr(node.value) if not _is_null(node) else "nothing (null)"


def _check_workers(config, root, where):
    from .provider import PROVIDER_TYPES
    provider = config["provider"]
    if provider["type"] not in PROVIDER_TYPES:
        _fail(where, _value_of(_value_of(root, "provider"), "type"), ("provider", "type"),
              f"{provider['type']!r} is not a provider zray has (it has: "
              f"{', '.join(sorted(PROVIDER_TYPES))}; README.md says how to add one)")
    if provider["type"] != "local":
        for key in ("min_workers", "max_workers"):
            config[key] = config[key] or 0
        return
    if not provider.get("head_ip"):
        provider_node = _child(root, "provider")
        _fail(where, provider_node, ("provider", "head_ip"),
              "required key is missing (the local provider needs head_ip and worker_ips)")
    ips = provider["worker_ips"]
    for key, default in (("max_workers", len(ips)), ("min_workers", len(ips))):
        if config[key] is None:
            config[key] = default
        elif config[key] > len(ips):
            _fail(where, _child(root, key), (key,),
                  f"{config[key]} is more than the {len(ips)} hosts in provider.worker_ips")
    if config["min_workers"] > config["max_workers"]:
        _fail(where, _child(root, "min_workers"), ("min_workers",),
              f"{config['min_workers']} is more than max_workers ({config['max_workers']})")


def _child(mapping_node, key):
    for key_node, value_node in mapping_node.value:
        if key_node.value == key:
            return key_node
    return mapping_node


def _value_of(mapping_node, key):
    for key_node, value_node in mapping_node.value:
        if key_node.value == key:
            return value_node
    return mapping_node
