"""The ``ftsafety`` command line (typer). One module per command; heavy imports stay inside them.

``validate``, ``plan``, ``ls`` and ``schema`` never import torch or vllm.
"""

from __future__ import annotations

import sys

import typer

from ftsafety.harness import __version__
from ftsafety.harness.errors import RetryableError, UserError

app = typer.Typer(
    name="ftsafety",
    help="Measure how fine-tuning breaks a chat model's safety, and which defenses hold.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ftsafety {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Measure how fine-tuning breaks a chat model's safety, and which defenses hold."""


def _register_commands() -> None:
    from ftsafety.harness.cli import (
        baseline,
        check,
        data,
        generate,
        kl,
        ls,
        plan,
        probe,
        report,
        run,
        schema,
        score,
        validate,
    )

    for module in (run, plan, validate, ls, report, check, baseline, schema, generate, score, data, kl, probe):
        module.register(app)
    try:
        from ftsafety.harness.cli.organism import app as organism_app
    except ImportError:  # pragma: no cover - the organism arrives with its own issue
        return
    app.add_typer(organism_app, name="organism", help="Build and inspect the model organism.")


_register_commands()


def report_user_error(exc: UserError) -> int:
    for line in exc.problems if len(exc.problems) > 1 or exc.problems[0] != str(exc) else [str(exc)]:
        print(f"error: {line}", file=sys.stderr)
    return exc.exit_code


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: user mistakes become one-line errors with exit code 2; work that
    failed for a transient reason and was not recorded (``RetryableError``), exit code 3."""
    try:
        app(args=argv, standalone_mode=True)
    except UserError as exc:
        return report_user_error(exc)
    except RetryableError as exc:  # transient (e.g. a judge outage): nothing to fix, rerun later
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0
