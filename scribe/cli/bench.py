"""`scribe bench`: the benchmark suite (`bench/runner.py`), the same as `make bench`."""

from __future__ import annotations

import sys

import click


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def bench(ctx: click.Context) -> None:
    """Run every benchmark case side by side (--runs, --events, --cases; BENCH_* env)."""
    from bench.runner import main

    sys.exit(main(list(ctx.args)))
