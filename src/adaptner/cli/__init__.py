"""The `adaptner` command line: one Typer app, one module per command group."""

import sys

import typer

from ..errors import AdaptnerError
from ..util import file_system_error
from . import corpus as _corpus
from . import distil as _distil
from . import dynamics as _dynamics
from . import encoder as _encoder
from . import evaluate as _evaluate
from . import package as _package
from . import pretrain as _pretrain
from . import session as _session
from . import simulate as _simulate
from . import tiny_bert as _tiny_bert
from . import train as _train

app = typer.Typer(
    name="adaptner",
    help=(
        "Adapt a Danish spaCy NER pipeline to a new text domain with as few annotations as "
        "possible: build per-domain corpora, train and evaluate, simulate active learning, run "
        "annotation sessions, and package the adapted pipeline."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (
    _corpus, _train, _encoder, _tiny_bert, _evaluate, _package, _simulate, _session, _dynamics,
    _pretrain, _distil,
):
    module.register(app)


def main() -> None:
    """Entry point: run the app; user errors print one clear message and exit 1."""
    try:
        app(standalone_mode=False)
    except AdaptnerError as e:
        typer.secho(f"✘ {e}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except typer.Abort:
        typer.secho("Aborted.", err=True)
        sys.exit(1)
    except SystemExit:
        raise
    except OSError as e:
        error = file_system_error(e)  # disk full, permission denied, read-only: one line
        if error is None:
            raise
        typer.secho(f"✘ {error}", fg=typer.colors.RED, err=True)
        sys.exit(1)
    except Exception as e:
        # Usage errors (bad option values, missing arguments). Typer ships its own copy of
        # click, so match on the interface, not on a class from one particular click.
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code)
        raise
