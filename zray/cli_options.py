"""What several ``zray`` subcommands share: the temp root they look under
and the options that find a running cluster."""
import os

import click

from .transport.auth import TOKEN_ENV


def temp_root(temp_dir):
    """The directory sessions, records and the cluster file live under."""
    from .session import default_temp_root
    return os.path.abspath(os.path.expanduser(temp_dir)) if temp_dir else default_temp_root()


def cluster_options(command):
    """--address, --redis-password and --temp-dir: which running cluster."""
    command = click.option("--temp-dir", default=None,
                           help="the --temp-dir the cluster was started with "
                                "(to find it with 'auto')")(command)
    command = click.option("--redis-password", "--password", "password", default="",
                           envvar=TOKEN_ENV,
                           help="the cluster's token (default: $ZRAY_CLUSTER_TOKEN, or the one "
                                "recorded on this machine by `zray start`)")(command)
    command = click.option("--address", "--redis-address", "address", default="auto",
                           show_default=True,
                           help="cluster address HOST:PORT, or 'auto' for the one started on "
                                "this machine")(command)
    return command
