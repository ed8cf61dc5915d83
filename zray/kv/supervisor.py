"""The head node keeps its kv service running: restarted when it dies.

::

    head node loop ── tick(now), every CHECK_S ──► kv pid alive?
                                                   no ──► spawn the same command
                                                          (same addresses, same token,
                                                           --journal: state reloaded)

- Spawning is a fork and exec, no waiting: the node's loop goes on; clients
  (nodes, drivers) reconnect to the same addresses by themselves and nodes
  re-register with their next heartbeat.
- A restarted kv is the node's child and goes with it: ``stop`` ends it,
  and without an owner of its own it is given the node as owner, so a
  killed node leaves no kv behind.
"""
import logging
import os
import subprocess

import psutil

from ..transport import auth

log = logging.getLogger("zray.node")

CHECK_S = 0.5


class KvSupervisor:
    def __init__(self, command, pid, log_path, token, owner_gone=lambda: False):
        self.command = list(command)
        # A kv that exited because the node's owner is gone (both watch it)
        # is not restarted: the node stops next.
        self.owner_gone = owner_gone
        if "--owner-pid" not in self.command:
            self.command += ["--owner-pid", str(os.getpid())]
        self.pid = pid
        self.log_path = log_path
        self.token = token
        self.process = None          # the kv we started, once we have restarted it
        self.restarts = 0
        self.next_check = 0.0

    def tick(self, now):
        if now < self.next_check:
            return
        self.next_check = now + CHECK_S
        if self._alive() or self.owner_gone():
            return
        log.warning("the kv service (pid %d) is gone; restarting it", self.pid)
        env = dict(os.environ)
        env[auth.TOKEN_ENV] = self.token
        try:
            with open(self.log_path, "ab") as log_file:
                self.process = subprocess.Popen(
                    self.command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=log_file, env=env, close_fds=True)
        except OSError as exc:
            log.error("could not restart the kv service: %s", exc)
            return
        self.pid = self.process.pid
        self.restarts += 1

    def _alive(self):
        if self.process is not None:
            return self.process.poll() is None
        try:         # not our child: a zombie (its parent has not reaped it) is dead too
            return psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(2.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
