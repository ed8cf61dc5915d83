"""The click commands ``zray up / down / exec / attach / get_head_ip``
(options as ``ray``'s); ``add_commands`` attaches them to the ``zray`` group."""
import click

_CONFIG_ARG = click.argument("cluster_config_file", type=click.Path(dir_okay=False))
_NAME_OPTION = click.option("-n", "--cluster-name", default=None,
                            help="override the configured cluster name")


def _load(path, cluster_name=None, min_workers=None, max_workers=None):
    from .commands import LauncherError, apply_overrides
    from .config import ConfigError, load_config
    try:
        config = load_config(path)
        return apply_overrides(config, cluster_name, min_workers, max_workers)
    except OSError as exc:
        raise click.ClickException(f"cannot read the cluster config {path}: "
                                   f"{exc.strerror}") from None
    except (ConfigError, LauncherError) as exc:
        raise click.ClickException(str(exc)) from None


def _confirm(yes):
    return (lambda _question: True) if yes else (
        lambda question: click.confirm(question, default=False))


def _run(action):
    """Call ``action`` and turn the launcher's errors into a clean exit."""
    from .commands import LauncherError, failure_message
    from .updater import StepFailed
    try:
        return action()
    except (LauncherError, StepFailed, ConnectionError, RuntimeError, FileNotFoundError) as exc:
        raise click.ClickException(failure_message(exc)) from None


@click.command()
@_CONFIG_ARG
@click.option("--no-restart", is_flag=True,
              help="do not restart zray during the update (running jobs go on)")
@click.option("--restart-only", is_flag=True,
              help="skip the setup commands, only restart zray")
@click.option("--min-workers", type=click.IntRange(min=0), default=None,
              help="override the configured minimum number of workers")
@click.option("--max-workers", type=click.IntRange(min=0), default=None,
              help="override the configured maximum number of workers")
@_NAME_OPTION
@click.option("-y", "--yes", is_flag=True, help="do not ask for confirmation")
def up(cluster_config_file, no_restart, restart_only, min_workers, max_workers, cluster_name,
       yes):
    """Create or update a zray cluster from a Ray cluster config (YAML)."""
    from . import commands
    config = _load(cluster_config_file, cluster_name, min_workers, max_workers)
    _run(lambda: commands.up(config, click.echo, _confirm(yes), no_restart=no_restart,
                             restart_only=restart_only))


@click.command()
@_CONFIG_ARG
@click.option("--workers-only", is_flag=True, help="stop only the workers; keep the head")
@click.option("-y", "--yes", is_flag=True, help="do not ask for confirmation")
@_NAME_OPTION
def down(cluster_config_file, workers_only, yes, cluster_name):
    """Stop zray on the cluster's nodes and forget the cluster."""
    from . import commands
    config = _load(cluster_config_file, cluster_name)
    _run(lambda: commands.down(config, click.echo, _confirm(yes), workers_only=workers_only))


@click.command(name="exec")
@_CONFIG_ARG
@click.argument("cmd")
@click.option("--docker", is_flag=True,
              help="run CMD in the docker container of the config's docker section")
@click.option("--stop", is_flag=True, help="bring the cluster down after CMD finishes")
@click.option("--start", is_flag=True, help="bring the cluster up first if it is not")
@click.option("--screen", is_flag=True, help="run CMD detached, in screen")
@click.option("--tmux", is_flag=True, help="run CMD detached, in tmux")
@_NAME_OPTION
@click.option("--port-forward", type=click.IntRange(1, 65535), multiple=True,
              help="forward this local port to the same port on the head (repeatable)")
def exec_command(cluster_config_file, cmd, docker, stop, start, screen, tmux, cluster_name,
                 port_forward):
    """Run CMD on the cluster's head node; exit with its status."""
    from . import commands
    config = _load(cluster_config_file, cluster_name)
    if docker:
        raise click.UsageError(
            f"--docker runs CMD in the container of the config's docker section, and "
            f"{cluster_config_file} has none (zray's launcher runs nodes without containers)")
    status = _run(lambda: commands.exec_on_head(config, cmd, click.echo, start=start,
                                                stop=stop, tmux=tmux, screen=screen,
                                                port_forward=port_forward))
    raise SystemExit(status)


@click.command()
@_CONFIG_ARG
@click.option("--start", is_flag=True, help="bring the cluster up first if it is not")
@click.option("--tmux", is_flag=True, help="attach to tmux on the head (new if none)")
@_NAME_OPTION
@click.option("-N", "--new", is_flag=True, help="open a new tmux session (with --tmux)")
def attach(cluster_config_file, start, tmux, cluster_name, new):
    """Open an interactive shell on the cluster's head node."""
    from . import commands
    config = _load(cluster_config_file, cluster_name)
    raise SystemExit(_run(lambda: commands.attach(config, click.echo, start=start, tmux=tmux,
                                                  new=new)))


@click.command(name="get_head_ip")
@_CONFIG_ARG
@_NAME_OPTION
def get_head_ip(cluster_config_file, cluster_name):
    """Print the head node's address."""
    from . import commands
    config = _load(cluster_config_file, cluster_name)
    click.echo(_run(lambda: commands.get_head_ip(config)))


def add_commands(group):
    for command in (up, down, exec_command, attach, get_head_ip):
        group.add_command(command)
