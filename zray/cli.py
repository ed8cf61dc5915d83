"""The ``zray`` command line."""
import click

from . import __version__


@click.group()
@click.version_option(__version__, prog_name="zray")
def main():
    """zray: the Ray API on a broker-less ZeroMQ runtime."""
