"""`layerboot` command line. One module per command group; each command parses its arguments and calls one
library function (flows, models or storage).

User and environment errors (bad config, bad input, refused store operations, a workdir that is
a file, read-only, not permitted or full, object-store credentials) print one line and exit 2;
a refused command writes nothing. `layerboot --debug ...` (or LAYERBOOT_DEBUG=1) shows the full
traceback instead. Heavy imports happen inside commands so `--help` stays fast.
"""

from __future__ import annotations

import atexit
import gc
import inspect
from typing import Annotated

import typer

from flows.cli import judge, model, rounds, workdir
from flows.cli.common import DEBUG

# At exit the interpreter's last collection walks every object the command's imports made (torch,
# diffusers, transformers: 1.5-3 s measured on 2 cores, more under load), which makes a Ctrl-C'd
# command linger after "interrupted". Frozen objects are skipped (gc.freeze); what a command must
# undo it undoes before this point (rollbacks, locks), and weakref.finalize's cleanups run at exit.
atexit.register(gc.freeze)

app = typer.Typer(
    help="Self-improving data bootstrapping for layered image decomposition "
    "(composite -> logo + object) with a FLUX.1-Fill IC-LoRA and a Qwen-VL judge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an error (or set "
                                              "LAYERBOOT_DEBUG=1).")] = False) -> None:
    DEBUG["on"] = debug


# the command list shows each docstring's first paragraph as one line, which rich wraps to the terminal
for group in (rounds.app, workdir.app, model.app):
    for info in group.registered_commands:
        info.short_help = " ".join(inspect.getdoc(info.callback).split("\n\n")[0].split())

app.add_typer(rounds.app)  # seed, add-unlabeled, add-layers, run, resume, ablate, deploy
app.add_typer(workdir.app)  # status, fsck, review, override, report, export
app.add_typer(model.app)  # train, evaluate, decompose, compose, pretrain-tiny, make-flux-shaped
app.add_typer(judge.app, name="judge", rich_help_panel="The judge")  # `layerboot judge calibrate|score`
