"""Running commands on a node and copying files to it, over the system ``ssh``.

Every call is one ``ssh`` process: key auth only (``BatchMode=yes``: no
password prompt can hang ``zray up``), a connect timeout, host keys pinned in
``<zray home>/known_hosts`` on first contact (``accept-new``: a key that
later changes is refused, as ssh does). Commands run in ``bash --login`` (so
``~/.profile`` sets PATH, as on a terminal); their script travels on stdin,
so the environment given to them (the cluster token among it) is in no
process's argv on either side. Files travel as a tar stream into ``tar -x``
on the node: ``~`` in a remote path works, and only ssh and tar are needed.
"""
import os
import shlex
import subprocess
import tarfile
import time

SSH_UNREACHABLE = 255       # ssh's own exit status: it could not connect
# ssh's words for a refusal that waiting will not cure.
_PERMANENT = ("Permission denied", "Host key verification failed",
              "REMOTE HOST IDENTIFICATION HAS CHANGED", "Too many authentication failures")


class SSHRunner:
    def __init__(self, address, auth, known_hosts, connect_timeout_s=10):
        self.address = address
        self.auth = auth
        self.known_hosts = known_hosts
        self.connect_timeout_s = connect_timeout_s

    def ssh_argv(self, tty=False, port_forward=()):
        auth = self.auth
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout_s}",
                "-o", "StrictHostKeyChecking=accept-new",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "LogLevel=ERROR",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=6",
                "-p", str(auth.get("ssh_port") or 22)]
        if auth.get("ssh_private_key"):
            argv += ["-i", os.path.expanduser(auth["ssh_private_key"]),
                     "-o", "IdentitiesOnly=yes"]
        if auth.get("ssh_proxy_command"):
            argv += ["-o", f"ProxyCommand={auth['ssh_proxy_command']}"]
        for port in port_forward:
            argv += ["-L", f"{port}:localhost:{port}"]
        argv.append("-tt" if tty else "-T")
        argv.append(f"{auth['ssh_user']}@{self.address}")
        return argv

    def run(self, command, env=None, timeout_s=None):
        """Run ``command`` (shell text) with ``env``; return (exit status, output)."""
        script = shell_exports(env) + "{\n" + command + "\n} </dev/null\n"
        try:
            done = subprocess.run(self.ssh_argv() + ["bash --login -s"], input=script,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  errors="replace", timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) \
                else (exc.stdout or "")
            return SSH_UNREACHABLE, output + f"\n(no answer within {timeout_s:.0f} s)"
        return done.returncode, done.stdout

    def run_interactive(self, command=None, env=None, tty=False, port_forward=()):
        """Run ``command`` (or a login shell) with this terminal attached; return its
        exit status. Its text is in ssh's argv: give it no secrets."""
        argv = self.ssh_argv(tty=tty, port_forward=port_forward)
        if command is not None:
            argv.append("bash --login -c " + shlex.quote(shell_exports(env) + command))
        return subprocess.call(argv)

    def wait_ready(self, timeout_s, on_retry):
        """Retry until the node answers over SSH (a machine still booting, sshd
        still starting); raise ConnectionError with ssh's last words if it never does."""
        deadline = time.monotonic() + timeout_s
        delay_s, attempt = 1.0, 0
        while True:
            attempt += 1
            status, output = self.run("true", timeout_s=self.connect_timeout_s + 20)
            if status == 0:
                return
            permanent = any(words in output for words in _PERMANENT)
            if status != SSH_UNREACHABLE or permanent or time.monotonic() + delay_s > deadline:
                raise ConnectionError(
                    f"cannot run commands on {self.address} over SSH (exit status {status}): "
                    f"{output.strip() or 'no output'}. Check that sshd runs there, that "
                    f"auth.ssh_user and auth.ssh_private_key are right and the key is in the "
                    f"user's ~/.ssh/authorized_keys")
            on_retry(attempt, output.strip().splitlines()[-1:] or ["no answer"])
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 10.0)

    def copy(self, local, remote):
        """Copy the local file or directory ``local`` to ``remote`` on the node
        (a directory's contents are merged into ``remote``); return (status, output)."""
        local = os.path.expanduser(local)
        if os.path.isdir(local):
            target, arcname = remote, "."
        else:
            target, arcname = os.path.dirname(remote.rstrip("/")) or ".", \
                os.path.basename(remote.rstrip("/"))
        quoted = _remote_path(target)
        command = f"mkdir -p {quoted} && tar -x --no-same-owner -f - -C {quoted}"
        process = subprocess.Popen(self.ssh_argv() + [command], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            with tarfile.open(fileobj=process.stdin, mode="w|") as archive:
                archive.add(local, arcname=arcname)
        except BrokenPipeError:
            pass            # ssh or tar failed: its output says why
        finally:
            process.stdin.close()
        output = process.stdout.read().decode(errors="replace")
        return process.wait(), output


def shell_exports(env):
    if not env:
        return ""
    return "export " + " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items()) + "\n"


def _remote_path(path):
    """Quote a remote path for the shell, keeping a leading ``~`` meaning $HOME."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)
