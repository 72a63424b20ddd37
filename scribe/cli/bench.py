"""`scribe bench`: the benchmark suite, the same as `make bench` and `python -m bench`.

The suite is developer tooling (the dev and bench extras) that imports the pipeline's own
modules; it is imported here only when the command runs, so the CLI never depends on it."""

from __future__ import annotations

import sys

import click

from scribe.cli.dev import dev_tools


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def bench(ctx: click.Context) -> None:
    """Run every benchmark case side by side (--runs, --events, --cases; BENCH_* env)."""
    with dev_tools("dev,bench"):
        from bench.runner import main

    sys.exit(main(list(ctx.args)))
