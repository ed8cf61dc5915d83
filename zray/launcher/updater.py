"""Bringing one node up to date, re-running only what changed.

A node's setup is a list of steps, in Ray's order: initialization commands,
the file mounts (one step, keyed by a hash of the files' contents), then
setup commands and the head's or worker's own setup commands. Each step has
a hash; the node's record keeps the hashes of the steps that ran. Like
layers of a Dockerfile, ``zray up`` skips the longest unchanged prefix and
re-runs from the first step that changed (a changed file mount re-runs the
setup commands after it, which may install from it). Start commands run when
anything ran, when their text changed, on a new node, or with
``--restart-only``; never with ``--no-restart``.
"""
import hashlib
import os


class StepFailed(RuntimeError):
    """A command failed on a node; the message names host, command and status."""


class Step:
    def __init__(self, label, text, digest_extra=""):
        self.label = label           # "initialization", "file mount", "setup", ...
        self.text = text             # the command, or "REMOTE <- LOCAL" for a mount
        self.hash = _digest(label, text, digest_extra)


def setup_steps(config, kind):
    steps = [Step("initialization", cmd) for cmd in config["initialization_commands"]]
    mounts = config["file_mounts"]
    if mounts:
        base = os.path.dirname(config["config_path"])
        text = ", ".join(f"{remote} <- {local}" for remote, local in sorted(mounts.items()))
        steps.append(Step("file mounts", text, mounts_digest(mounts, base)))
    steps += [Step("setup", cmd) for cmd in config["setup_commands"]]
    steps += [Step(f"{kind} setup", cmd) for cmd in config[f"{kind}_setup_commands"]]
    return steps


def start_digest(config, kind):
    return _digest("start", *config[f"{kind}_start_ray_commands"])


def mounts_digest(mounts, base):
    """A hash of every local file's path, mode and bytes (a missing path raises)."""
    digest = hashlib.sha256()
    for remote, local in sorted(mounts.items()):
        path = local_mount_path(local, base)
        if not os.path.exists(path):
            raise FileNotFoundError(f"file_mounts: {remote}: the local path {local} "
                                    f"({path}) does not exist")
        digest.update(f"{remote}\0".encode())
        for file_path in _files_under(path):
            digest.update(f"{os.path.relpath(file_path, path)}\0"
                          f"{os.stat(file_path).st_mode:o}\0".encode())
            with open(file_path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def local_mount_path(local, base):
    # Relative local paths are relative to the config file, as in Ray.
    return os.path.join(base, os.path.expanduser(local))


def _files_under(path):
    if not os.path.isdir(path):
        return [path]
    found = []
    for directory, subdirs, files in os.walk(path):
        subdirs.sort()
        found += [os.path.join(directory, name) for name in sorted(files)]
    return found


def _digest(*parts):
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


class NodeUpdater:
    """Runs one node's steps through the provider, recording progress in
    ``node`` (its state-file entry) and calling ``save`` after each step so a
    failure resumes where it stopped."""

    def __init__(self, provider, node_id, kind, config, env, say, save):
        self.provider, self.node_id, self.kind = provider, node_id, kind
        self.config, self.env, self.say, self.save = config, env, say, save
        self.node = provider.record["nodes"][node_id]
        self.tag = f"[{provider.address(node_id)} {kind}]"

    def wait_ready(self, timeout_s):
        def on_retry(attempt, last_words):
            self.say(f"{self.tag} waiting for SSH (attempt {attempt}: {last_words[0]})")
        self.provider.runner(self.node_id).wait_ready(timeout_s, on_retry)

    def setup(self, restart_only):
        """Run the setup steps that changed; return how many ran."""
        steps = setup_steps(self.config, self.kind)
        done = self.node["done"]
        first = 0
        while first < len(steps) and first < len(done) and done[first] == steps[first].hash:
            first += 1
        if restart_only:
            if first < len(steps):
                self.say(f"{self.tag} --restart-only: skipping {len(steps) - first} setup "
                         f"step(s) that changed")
            return 0
        if first:
            self.say(f"{self.tag} unchanged: {first} setup step(s)")
        for index in range(first, len(steps)):
            step = steps[index]
            self.say(f"{self.tag} {step.label}: {step.text}")
            if step.label == "file mounts":
                self._copy_mounts()
            else:
                self._run(step.text, self.env)
            self.node["done"] = [s.hash for s in steps[:index + 1]]
            self.save()
        self.node["done"] = [s.hash for s in steps]
        return len(steps) - first

    def needs_start(self):
        return self.node.get("start") != start_digest(self.config, self.kind)

    def start(self, token):
        env = dict(self.env, ZRAY_CLUSTER_TOKEN=token)
        self.node["start"] = None          # until they all succeed: the next up retries
        self.save()
        for command in self.config[f"{self.kind}_start_ray_commands"]:
            self.say(f"{self.tag} start zray: {command}")
            self._run(command, env)
        self.node["start"] = start_digest(self.config, self.kind)
        self.save()

    def stop(self, token):
        """Run the stop commands; report a failure instead of raising (the
        node may already be gone)."""
        env = dict(self.env, ZRAY_CLUSTER_TOKEN=token)
        for command in self.config[f"{self.kind}_stop_ray_commands"]:
            self.say(f"{self.tag} stop zray: {command}")
            try:
                self._run(command, env)
            except StepFailed as exc:
                self.say(f"{self.tag} warning: {exc}")
                return False
        return True

    def _run(self, command, env):
        status, output = self.provider.run(self.node_id, command, env=env)
        if status != 0:
            self._show(output)
            raise StepFailed(f"{self.tag} `{command}` exited with status {status}"
                             f"{' (output above)' if output.strip() else ''}")

    def _copy_mounts(self):
        base = os.path.dirname(self.config["config_path"])
        for remote, local in sorted(self.config["file_mounts"].items()):
            status, output = self.provider.copy(self.node_id, local_mount_path(local, base),
                                                remote)
            if status != 0:
                self._show(output)
                raise StepFailed(f"{self.tag} copying {local} to {remote} failed with "
                                 f"status {status}")

    def _show(self, output):
        for line in output.rstrip().splitlines():
            self.say(f"{self.tag}   | {line}")
