"""The ``ssmdefense`` command line. Thin: parse, call the library, print.

Heavy imports (torch, ART) happen inside command bodies so ``--help`` stays fast. Every bad input
(unknown name, bad value, missing file, corrupt checkpoint, wrong shape) ends with one line on
stderr and exit status 2.
"""

from __future__ import annotations

import sys

import click

from ..errors import OptionError, SSMDefenseError


class RootGroup(click.Group):
    """Root group: adds plugin commands lazily and turns user errors into one line + exit 2."""

    _plugins_added = False

    def _add_plugin_commands(self):
        if not self._plugins_added:
            self._plugins_added = True
            from ..plugins import add_commands

            add_commands(self)

    def list_commands(self, ctx):
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is None:
            self._add_plugin_commands()
            cmd = super().get_command(ctx, name)
        return cmd

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name or "ssmdefense",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except click.exceptions.Abort as exc:
            # click turns Ctrl-C into Abort; keep the shell's convention for an interrupt (128 + SIGINT)
            ctrl_c = isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt)
            click.echo("Interrupted." if ctrl_c else "Aborted.", err=True)
            rv = 130 if ctrl_c else 1
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            rv = 2 if isinstance(exc, click.UsageError) else (exc.exit_code or 1)
            if isinstance(exc, UserError):
                rv = 2
        except OptionError as exc:  # a bad setting, said as click says a bad option value
            click.echo(f"Error: Invalid value for '{exc.option}': {exc.message}", err=True)
            rv = 2
        except SSMDefenseError as exc:
            click.echo(f"Error: {exc}", err=True)
            rv = 2
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            rv = 130
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


class UserError(click.ClickException):
    exit_code = 2


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ssmdefense")
def cli():
    """Adversarial attacks and defenses for deep state space models, on IBM's ART."""


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C, so partial run directories are removed


def main():
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    cli()


from . import certify, compare, evaluate, listing, run  # noqa: E402,F401  (register commands)
