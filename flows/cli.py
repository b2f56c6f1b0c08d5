"""`layerboot` command line. Each command is a few lines that call flows, models or storage.

User errors (bad config, bad input, refused store operations) print one line and exit 2;
nothing is half-written. Heavy imports happen inside commands so `--help` stays fast.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

app = typer.Typer(
    help="Self-improving data bootstrapping for layered image decomposition "
    "(composite -> logo + object) with a FLUX.1-Fill IC-LoRA and a Qwen-VL judge.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    str, typer.Option("--config", "-c", help="Config YAML, or a profile name (tiny, flux).", show_default=True)
]
WorkdirOpt = Annotated[
    Optional[str],
    typer.Option("--workdir", "-w", help="Run folder: a path or fsspec URI (s3://bucket/run). Default: runs/<run name>."),
]
EXIT_USAGE = 2


@contextmanager
def user_errors() -> Iterator[None]:
    """Expected failures become one clear line on stderr and exit code 2, never a traceback."""
    from configs import ConfigError
    from storage.imports import ImportFailed
    from storage.images import ImageError
    from storage.schema import SchemaError
    from storage.store import StoreError

    try:
        yield
    except (ConfigError, ImportFailed, ImageError, SchemaError, StoreError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


def _open(config: str, workdir: str | None):
    from configs import load_config
    from storage.store import Store

    cfg = load_config(config)
    return cfg, Store(workdir or str(Path("runs") / cfg.run.name))


@app.command()
def seed(
    config: ConfigOpt = "configs/tiny.yaml",
    workdir: WorkdirOpt = None,
    n: Annotated[Optional[int], typer.Option("--n", min=1, help="Seed triplets (default: data.n_seeds).")] = None,
    n_test: Annotated[Optional[int], typer.Option("--n-test", min=0, help="Held-out test triplets (default: data.n_test).")] = None,
    from_dir: Annotated[
        Optional[Path], typer.Option("--from-dir", help="Import your own triplets: DIR/<name>/{composite,logo,object}.png")
    ] = None,
) -> None:
    """Write round 0: seed triplets (procedural, or imported with --from-dir) and the held-out test split."""
    with user_errors():
        from models.seeding import seed_rows
        from storage.schema import to_table

        cfg, store = _open(config, workdir)
        n_seeds = cfg.data.n_seeds if n is None else n
        n_held = cfg.data.n_test if n_test is None else n_test
        rows = seed_rows(store, cfg, n_seeds, n_held, str(from_dir) if from_dir else None)
        info = store.commit_round(0, to_table(rows))
        if info.noop:
            typer.echo(f"round 0 already committed in {store.uri} with identical content: nothing to do")
        else:
            typer.echo(f"committed round 0 in {store.uri}: {info.rows} triplets (digest {info.content_digest[:12]})")


@app.command()
def status(
    config: ConfigOpt = "configs/tiny.yaml",
    workdir: WorkdirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """One row per round: state, candidates, accepted, selection rate, pool size."""
    with user_errors():
        from storage.status import round_status

        _, store = _open(config, workdir)
        rows = round_status(store)
        if as_json:
            typer.echo(json.dumps({"workdir": store.uri, "rounds": rows}, indent=1))
            return
        typer.echo(f"workdir: {store.uri}")
        if not rows:
            typer.echo("no rounds yet: run `layerboot seed` first")
            return
        header = f"{'round':>5}  {'state':<10} {'rows':>6} {'candidates':>10} {'accepted':>8} {'selection':>9} {'pool':>6}"
        typer.echo(header)
        for r in rows:
            rate = "-" if r["selection_rate"] is None else f"{r['selection_rate']:.1%}"
            typer.echo(
                f"{r['round']:>5}  {r['state']:<10} {r['rows'] or 0:>6} {r['candidates'] or 0:>10} "
                f"{r['accepted'] or 0:>8} {rate:>9} {r['pool_size'] or 0:>6}"
            )


@app.command()
def review(
    round: Annotated[int, typer.Option("--round", "-r", min=0, help="Committed round to show.")],
    config: ConfigOpt = "configs/tiny.yaml",
    workdir: WorkdirOpt = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="PNG to write (default: <workdir>/review/round=NN.png).")] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Triplets on the sheet.")] = 16,
    split: Annotated[str, typer.Option("--split", help="train or test.")] = "train",
) -> None:
    """Write a contact sheet (composite | logo | object) of a round's accepted triplets."""
    with user_errors():
        from models.viz import contact_sheet
        from storage.images import encode_png

        _, store = _open(config, workdir)
        rows = [r for r in store.read_round(round).to_pylist() if r["accepted"] and r["split"] == split][:n]
        if not rows:
            raise FileNotFoundError(f"round {round} has no accepted {split} triplets")
        panels = [tuple(store.read_image(r[f"{p}_uri"]) for p in ("composite", "logo", "object")) for r in rows]
        sheet = contact_sheet(panels, [r["prompt"] for r in rows])
        data = encode_png(sheet)
        if out is None:
            store.loc.write_atomic(store.loc.join("review", f"round={round:02d}.png"), data)
            target = store.loc.uri(store.loc.join("review", f"round={round:02d}.png"))
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
            target = str(out)
        typer.echo(f"wrote {target} ({len(rows)} triplets)")


@app.command("pretrain-tiny")
def pretrain_tiny(
    out: Annotated[Path, typer.Option("--out", help="Where to write the base (diffusers layout).")] = Path("models/tiny_base"),
    stage: Annotated[list[str], typer.Option("--stage", help="vae and/or transformer (default: both).")] = ["vae", "transformer"],
    threads: Annotated[int, typer.Option("--threads", min=1, help="torch CPU threads.")] = 2,
) -> None:
    """Pretrain the tiny profile's base (VAE, then the Fill transformer) on procedural families
    that never include the logo-on-object domain; writes safetensors + RECIPE.json."""
    with user_errors():
        import torch

        from models.backbone import TinySpec
        from models.pretrain import PretrainRecipe, pretrain_tiny as run_pretrain

        bad = set(stage) - {"vae", "transformer"}
        if bad:
            raise typer.BadParameter(f"unknown stage(s) {sorted(bad)}")
        torch.set_num_threads(threads)
        command = "layerboot pretrain-tiny " + " ".join(sys.argv[2:])
        record = run_pretrain(out, TinySpec(), PretrainRecipe(), tuple(stage), log=typer.echo, command=command.strip())
        typer.echo(json.dumps(record["results"], indent=1))


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
