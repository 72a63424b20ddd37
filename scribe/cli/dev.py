"""The commands that run the developer tools (devkit/, installed by the dev extra): `scribe
stack up | down | status` and `scribe demo`. A production install has no devkit dependencies,
so devkit is imported only inside these commands, under `dev_tools`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from runtime.settings import Settings


@contextmanager
def dev_tools(extra: str = "dev") -> Iterator[None]:
    """Around a developer command: if a module of the `extra` is missing, one line that says
    how to install it, and exit status 1 (instead of a traceback)."""
    try:
        yield
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"this command needs the developer tools (module {exc.name!r} is missing): "
            f"install them with `pip install '.[{extra}]'`"
        ) from None


@click.group()
def stack() -> None:
    """The embedded local stack on loopback: Kafka protocol (Tansu), PostgreSQL, Redis and the
    CDN purge simulator."""


BROKER_HELP = (
    "tansu (the default: memory-only, from pip) or apache (Apache Kafka from Maven Central's "
    "jars: needs Java 17+ and Maven; durable, with transactions)."
)


@stack.command("up")
# The choices are spelled here, not imported from devkit: `--help` works without the dev extra.
@click.option("--broker", type=click.Choice(("tansu", "apache")), default=None, help=BROKER_HELP)
def stack_up(broker: str | None) -> None:
    """Start what is not running; print the `export` lines that point the pipeline at it."""
    state_dir = Settings.from_env().state_dir
    with dev_tools():
        from devkit.stack import LocalStack, StackError

        try:
            local = LocalStack.at(state_dir) if broker is None else LocalStack(state_dir, broker)
            env = local.up(report=lambda line: click.echo(line, err=True))
        except StackError as exc:
            raise click.ClickException(str(exc)) from None
    for name, value in env.items():
        click.echo(f"export {name}={value}")


@stack.command("down")
def stack_down() -> None:
    """Stop exactly what `scribe stack up` started."""
    with dev_tools():
        from devkit.stack import LocalStack

        LocalStack.at(Settings.from_env().state_dir).down(
            report=lambda line: click.echo(line, err=True)
        )


@stack.command("status")
def stack_status() -> None:
    """Show each service, its URL and whether it runs; exit 1 unless all run."""
    with dev_tools():
        from devkit.stack import LocalStack

        statuses = LocalStack.at(Settings.from_env().state_dir).status()
    if not statuses:
        click.echo("the embedded stack is not running")
        sys.exit(1)
    for status in statuses:
        state = "running" if status.running else "stopped"
        click.echo(f"{status.name:<12} {state:<8} pid {status.pid:<8} {status.url}")
    sys.exit(0 if all(s.running for s in statuses) else 1)


@click.command()
@click.option("--seconds", type=float, envvar="DEMO_SECONDS", default=60, show_default=True)
def demo(seconds: float) -> None:
    """Run a worker on the embedded stack (or SCRIBE_*_URL) under a mixed load, then summarize."""
    with dev_tools():
        from devkit.demo import run_demo

    sys.exit(run_demo(seconds, Path.cwd()))
