"""The ``zray`` command line: the group and where its subcommands live.

Each subcommand is one function; the cluster ones (start, stop, status,
timeline) only talk to the daemons through ``session``/``cluster``, so the
command line itself holds no state.

- ``cli_daemons``: start, stop (this machine's daemons)
- ``cli_inspect``: status, timeline, stack (reading a running cluster)
- ``launcher/cli``: up, down, exec, attach, get_head_ip (cluster configs)
- here: memory, microbenchmark
"""
import click

from . import __version__
from .cli_daemons import add_commands as _add_daemon_commands
from .cli_inspect import add_commands as _add_inspect_commands
from .launcher.cli import add_commands as _add_launcher_commands
from .transport.auth import TOKEN_ENV as _TOKEN_ENV


@click.group()
@click.version_option(__version__, prog_name="zray")
def main():
    """zray: the Ray API on a broker-less ZeroMQ runtime."""


_add_launcher_commands(main)     # up, down, exec, attach, get_head_ip: zray/launcher/


@main.command()
@click.option("--address", default="auto", show_default=True,
              help="cluster address HOST:PORT (the head's kv service), or 'auto' for the "
                   "cluster started on this machine")
@click.option("--redis-password", "password", default="", envvar=_TOKEN_ENV,
              help="the cluster's token (default: $ZRAY_CLUSTER_TOKEN, or the one "
                   "recorded on this machine)")
def memory(address, password):
    """List the objects in the object store: id, size, where, who holds them."""
    from .cluster import current_token, find_cluster
    from .plasma.report import memory_summary
    from .exceptions import RayError
    try:
        password = current_token(address, password)
        node_address, _info = find_cluster(address, password)
        click.echo(memory_summary(node_address, password))
    except (ConnectionError, OSError, ValueError, RayError) as exc:
        raise click.ClickException(str(exc)) from None


_add_daemon_commands(main)       # start, stop: cli_daemons.py
_add_inspect_commands(main)      # status, timeline, stack: cli_inspect.py


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def microbenchmark(ctx):
    """Run the benchmark suite (same options as `python -m benchmarks`)."""
    try:
        from benchmarks.cli import main as run_benchmarks
    except ImportError:
        raise click.ClickException(
            "the benchmark suite ships with the zray source tree: run this from a checkout "
            "(the directory holding benchmarks/)")
    raise SystemExit(run_benchmarks(list(ctx.args)))


if __name__ == "__main__":
    main()
