"""Two SSH "hosts" on this machine for the launcher tests: one real ``sshd``
listening on 127.0.0.1 and 127.0.0.2 (a free port), with its own host key,
a user key made for the test and its own config. Each address gets its own
``ZRAY_TEMP_DIR`` (sshd ``SetEnv``), so the two hosts keep their zray
processes apart as two machines would; ``TMUX_TMPDIR`` keeps any tmux server
they start inside the test's directory.
"""
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time

import psutil

ADDRESSES = ("127.0.0.1", "127.0.0.2")


def find_sshd():
    return shutil.which("sshd") or next(
        (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.path.exists(p)), None)


def free_port(addresses=ADDRESSES):
    for _ in range(50):
        probe = socket.socket()
        probe.bind((addresses[0], 0))
        port = probe.getsockname()[1]
        probe.close()
        try:
            for address in addresses:
                with socket.socket() as other:
                    other.bind((address, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on every test address")


class SSHHosts:
    """The running sshd and what a cluster config needs to reach it."""

    def __init__(self, directory):
        self.directory = str(directory)
        self.user = getpass.getuser()
        self.key = os.path.join(self.directory, "user_key")
        self.port = free_port()
        self.temp_dirs = {address: os.path.join(self.directory, f"host-{address}")
                          for address in ADDRESSES}
        self.tmux_dir = os.path.join(self.directory, "remote-tmux")
        self.process = None

    def start(self, sshd):
        self.prepare(sshd)
        self.launch()

    def prepare(self, sshd):
        """Keys, directories and sshd_config; sshd not started yet."""
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
        host_key = os.path.join(self.directory, "host_key")
        subprocess.run(keygen + ["-f", host_key], check=True)
        subprocess.run(keygen + ["-f", self.key], check=True)
        authorized = os.path.join(self.directory, "authorized_keys")
        shutil.copy(self.key + ".pub", authorized)
        os.makedirs(self.tmux_dir, mode=0o700)
        for path in self.temp_dirs.values():
            os.makedirs(path, mode=0o700)
        if os.getuid() == 0:
            # sshd as root insists on its privilege-separation directory.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        config = os.path.join(self.directory, "sshd_config")
        lines = [f"ListenAddress {address}:{self.port}" for address in ADDRESSES]
        lines += [f"HostKey {host_key}", f"AuthorizedKeysFile {authorized}",
                  f"PidFile {os.path.join(self.directory, 'sshd.pid')}",
                  "PermitRootLogin prohibit-password", "PasswordAuthentication no",
                  "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
                  "PrintMotd no"]
        # The first address is the plain case; Match blocks give each its own
        # temp dir (Match replaces SetEnv as a whole, so repeat TMUX_TMPDIR).
        for address in ADDRESSES:
            lines += [f"Match LocalAddress {address}",
                      f"    SetEnv ZRAY_TEMP_DIR={self.temp_dirs[address]} "
                      f"TMUX_TMPDIR={self.tmux_dir}"]
        with open(config, "w") as f:
            f.write("\n".join(lines) + "\n")
        check = subprocess.run([sshd, "-t", "-f", config], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"sshd refused the test config: {check.stderr}")
        self.command = [sshd, "-D", "-e", "-f", config]
        self.log = os.path.join(self.directory, "sshd.log")

    def launch(self):
        """Start sshd; return once it accepts connections on every address."""
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.command,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + 20
        for address in ADDRESSES:
            while not _accepts(address, self.port):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not start listening: {self.read_log()}")
                time.sleep(0.05)

    def read_log(self):
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        """Stop sshd and everything under it (sessions still open), by pid."""
        if self.process is None:
            return
        try:
            tree = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            tree = []
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        for child in tree:
            try:
                child.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        psutil.wait_procs(tree, timeout=5)


def _accepts(address, port):
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def zray_processes_under(temp_dirs):
    """zray processes (daemons, workers, tmux servers left aside) whose
    ZRAY_TEMP_DIR is one of ``temp_dirs``: what runs on the test's "hosts"."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            if "zray." not in cmdline or process.status() == psutil.STATUS_ZOMBIE:
                continue
            if process.environ().get("ZRAY_TEMP_DIR") in temp_dirs:
                found.append((process.pid, cmdline))
        except psutil.Error:
            continue
    return found
