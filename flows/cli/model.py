"""Commands that use the model outside a round: `train`, `evaluate`, `decompose`, `compose`,
`pretrain-tiny`, `make-flux-shaped`."""

from __future__ import annotations

import dataclasses

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli.common import ConfigOpt, SetOpt, WorkdirOpt, open_config, user_errors, with_overrides

app = typer.Typer()
PANEL = "The model outside a round"  # the heading of these commands in `layerboot --help`


def _sampler(cfg, adapter: Path | None):
    """A sampler over the config's base with `adapter` loaded (without one: the untrained model,
    which equals the base, since a fresh LoRA's B is zero)."""
    from models.iclora.sample import Sampler
    from models.loop.runtime import MODEL_LOCK, backbone_for

    with MODEL_LOCK:
        return Sampler(backbone_for(cfg, adapter), cfg)


def _config_and_images(config_path: str, sets, *paths: list[Path]):
    """The config (with --set overrides) and each list of image files, read and validated at its
    panel size (a bad file is named, before any model loads)."""
    from configs import load_config
    from storage.fs import read_regular_file
    from storage.images import ImageError, decode_image
    from storage.imports import MAX_FILE_BYTES

    cfg = load_config(with_overrides(config_path, sets))
    size = cfg.data.panel_size
    return cfg, tuple([decode_image(read_regular_file(p, MAX_FILE_BYTES, ImageError), str(p), size=size)
                       for p in group] for group in paths)


AdapterOpt = Annotated[Optional[Path], typer.Option("--adapter", help="Adapter folder (safetensors, diffusers LoRA format).")]


@app.command(rich_help_panel=PANEL)
def train(
    config: ConfigOpt = "configs/tiny.yaml",
    sets: SetOpt = None,
    workdir: WorkdirOpt = None,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Training steps (default: train.steps).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Adapter folder to write: a new one, or one it wrote (resumes a half-done run there).")] = Path("adapter"),
    warm_start: AdapterOpt = None,
) -> None:
    """Train an IC-LoRA adapter on the current pool (all committed rounds)."""
    with user_errors():
        config = with_overrides(config, sets)
        from models.loop.runtime import load_base
        from models.loop.stages import refuse_foreign_files, train_on_pool

        cfg, store = open_config(config, workdir, must_exist=True)
        rounds = store.committed_rounds()
        if not rounds:
            raise FileNotFoundError(f"no committed rounds in {store.uri}: run `layerboot seed` first")
        refuse_foreign_files(out)
        result, pool = train_on_pool(load_base(cfg), cfg, store, rounds[-1], out, warm_start=warm_start, steps=steps,
                                     seed=cfg.run.seed)
        if result.reused:
            typer.echo(f"{out} already holds this adapter (same config, pool and steps): nothing to do")
        else:
            typer.echo(f"wrote {out}: {result.steps} steps on {len(pool)} triplets in {result.seconds:.0f} s "
                       f"(L_rec {result.final_rec:.4f})")


@app.command(rich_help_panel=PANEL)
def evaluate(
    config: ConfigOpt = "configs/tiny.yaml",
    sets: SetOpt = None,
    workdir: WorkdirOpt = None,
    adapter: AdapterOpt = None,
    n: Annotated[Optional[int], typer.Option("--n", min=1, help="Test triplets to use (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    figure: Annotated[Optional[Path], typer.Option("--figure", help="Also write a PNG: truth beside prediction.")] = None,
) -> None:
    """Decomposition quality on the held-out test split: model vs trivial baseline (raw and through
    the codec) vs nearest seed (what memorising the seeds gives) vs codec ceiling.
    Without --adapter, evaluates the untrained base."""
    with user_errors():
        config = with_overrides(config, sets)
        from models.domains.registry import domain_of
        from models.loop.evaluate import BASELINES, decomposition_sheet, evaluate_decomposition, held_out, seed_triplets

        cfg, store = open_config(config, workdir, must_exist=True)
        test, seeds = held_out(cfg, store, n)
        if not test:
            raise FileNotFoundError(f"no test split in {store.uri}: run `layerboot seed` first")
        sampler = _sampler(cfg, adapter)
        predicted: list = []
        result = evaluate_decomposition(sampler, test, seeds, domain_of(cfg), predicted, seed_triplets(store))
        if figure:
            figure.parent.mkdir(parents=True, exist_ok=True)
            decomposition_sheet(test, predicted).save(figure)
        if as_json:
            typer.echo(json.dumps(result, indent=1))
            return
        typer.echo(f"{result['n']} held-out composites, adapter: {adapter or '(untrained)'}")
        typer.echo(f"{'':<15}" + "".join(f"{k:>23}" for k in result["model"]))
        for who in ("model", *(b for b in BASELINES if b in result), "codec"):
            typer.echo(f"{who:<15}" + "".join(f"{v:>23}" for v in result[who].values()))


def _new_files(out: Path, targets: list[Path], command: str) -> None:
    """Refuse, before any model loads, outputs that would overwrite a file (a user's own, or one
    an earlier run wrote: never replaced) or each other."""
    from storage.fs import ForeignFiles

    seen: set[Path] = set()
    for target in targets:
        if target in seen:
            raise typer.BadParameter(f"two inputs would both write {target} (inputs of one name in two folders)")
        seen.add(target)
        if os.path.lexists(target):
            raise ForeignFiles(f"{target}: exists, and `layerboot {command}` never overwrites a file: name a new "
                               "folder for --out or move it away (nothing was written)")


def _write_png(path: Path, image) -> None:
    import io

    from storage.fs import write_new_file

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)  # (only once there is something to write)
    write_new_file(path, buf.getvalue())


@app.command(rich_help_panel=PANEL)
def decompose(
    images: Annotated[list[Path], typer.Argument(help="Composite images (panel_size square).")],
    adapter: Annotated[Path, typer.Option("--adapter", help="Adapter folder.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for <name>_<layer>.png, one per layer "
                                      "(<name>_logo.png and <name>_object.png for the logo task); an existing "
                                      "file is never overwritten.")],
    config: ConfigOpt = "configs/tiny.yaml",
    sets: SetOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
) -> None:
    """Split composites into their two layers (a flat logo and the plain object)."""
    with user_errors():
        from models.domains.registry import domain_of
        from storage.hashing import derive_seed

        cfg, (composites,) = _config_and_images(config, sets, images)
        names = domain_of(cfg).panels[1:]
        targets = [[out / f"{path.stem}_{name}.png" for name in names] for path in images]
        _new_files(out, [t for pair in targets for t in pair], "decompose")
        results = _sampler(cfg, adapter).decompose(composites, [derive_seed(seed, p.name) for p in images])
        for pair, layers in zip(targets, results):
            for target, layer in zip(pair, layers):
                _write_png(target, layer)
        typer.echo(f"wrote {2 * len(results)} images to {out}")


@app.command(rich_help_panel=PANEL)
def compose(
    logo: Annotated[Path, typer.Option("--layer1", "--logo", help="First layer (the flat logo; the albedo).")],
    object_: Annotated[Path, typer.Option("--layer2", "--object", help="Second layer (the plain object; the shading).")],
    adapter: Annotated[Path, typer.Option("--adapter", help="Adapter folder.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for composite.png (refused if it is there already).")],
    config: ConfigOpt = "configs/tiny.yaml",
    sets: SetOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
) -> None:
    """Compose two layers (a logo onto an object): the composite."""
    with user_errors():
        cfg, (logos, objects) = _config_and_images(config, sets, [logo], [object_])
        _new_files(out, [out / "composite.png"], "compose")
        composite = _sampler(cfg, adapter).compose(logos, objects, [seed])[0]
        _write_png(out / "composite.png", composite)
        typer.echo(f"wrote {out / 'composite.png'}")


@app.command("pretrain-tiny", rich_help_panel=PANEL)
def pretrain_tiny(
    out: Annotated[Path, typer.Option("--out", help="Where to write the base (diffusers layout).")] = Path("models/tiny_base"),
    stage: Annotated[list[str], typer.Option(
        "--stage", help="encoder, decoder and/or transformer (default: all, in that order). decoder and "
        "transformer need only the encoder: run them in two processes to use two machines' worth of cores. "
        "Both checkpoint every 500 steps into --out; run the same command again to continue.")
    ] = ["encoder", "decoder", "transformer"],
    threads: Annotated[int, typer.Option("--threads", min=1, help="torch CPU threads.")] = 2,
    world: Annotated[str, typer.Option("--world", help="Whose single images the text-to-image share draws: "
                                       "logo_object or intrinsic.")] = "logo_object",
    transformer_steps: Annotated[Optional[int], typer.Option(
        "--transformer-steps", min=1, help="Transformer steps (default: the recipe's 5,000).")] = None,
    world_level: Annotated[Optional[int], typer.Option(
        "--world-level", min=0, help="The world's level the drawings show (data.world_level; default: the full "
        "world).")] = None,
    prediction_type: Annotated[str, typer.Option(
        "--prediction-type", help="What a new base's transformer outputs: velocity (FLUX's) or sample (the clean "
        "latents, x-prediction); recorded in the base's scheduler config. Read by --stage encoder, which "
        "builds the base.")] = "velocity",
    recipe_name: Annotated[str, typer.Option(
        "--recipe", help="The transformer's recipe: mix (every relation and the drawings at every step) or "
        "routing-first (a curriculum: copy, then moves and overlays, then cut-outs, then drawings).")] = "mix",
    fresh_transformer: Annotated[bool, typer.Option(
        "--fresh-transformer", help="With --stage transformer: start from new weights (of --prediction-type) on "
        "the codec and text encoders already in --out, rather than continue the transformer there.")] = False,
) -> None:
    """Pretrain the tiny profile's base: the codec (a PCA encoder, then its decoder) and the Fill
    transformer, on single images and generic in-context families of the procedural world, never
    on a triplet of the layer task; writes safetensors + RECIPE.json. `--stage transformer` on a
    copy of a trained base continues its transformer (RECIPE.json records from which)."""
    with user_errors():
        import torch

        from models.domains.registry import DOMAINS
        from models.iclora.backbone import PREDICTION_TYPES
        from models.iclora.tiny import TinySpec
        from models.pretrain.base import RECIPES, STAGES, WORLD_SINGLES, pretrain_tiny as run_pretrain

        bad = set(stage) - set(STAGES)
        if bad:
            raise typer.BadParameter(f"unknown stage(s) {sorted(bad)}; known: {', '.join(STAGES)}")
        if world not in WORLD_SINGLES:
            raise typer.BadParameter(f"unknown world {world!r}; known: {', '.join(WORLD_SINGLES)}")
        if world_level is not None and world_level >= DOMAINS[world].levels:
            raise typer.BadParameter(f"--world-level: the {world} world has levels 0..{DOMAINS[world].levels - 1}")
        if prediction_type not in PREDICTION_TYPES:
            raise typer.BadParameter(f"unknown prediction type {prediction_type!r}; known: {', '.join(PREDICTION_TYPES)}")
        if recipe_name not in RECIPES:
            raise typer.BadParameter(f"unknown recipe {recipe_name!r}; known: {', '.join(RECIPES)}")
        if transformer_steps and RECIPES[recipe_name].curriculum:
            raise typer.BadParameter(f"--transformer-steps: the {recipe_name} recipe's steps are its curriculum's")
        torch.set_num_threads(threads)
        command = "layerboot pretrain-tiny " + " ".join(sys.argv[2:])
        recipe = dataclasses.replace(RECIPES[recipe_name], world=world, world_level=world_level,
                                     **({"transformer_steps": transformer_steps} if transformer_steps else {}))
        spec = TinySpec(prediction_type=prediction_type)
        record = run_pretrain(out, spec, recipe, tuple(stage), log=typer.echo, command=command.strip(),
                              fresh_transformer=fresh_transformer)
        typer.echo(json.dumps(record["results"], indent=1))


@app.command("make-flux-shaped", rich_help_panel=PANEL)
def make_flux_shaped_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for flux/ (diffusers layout) and qwen/ (transformers layout).")],
    t5_max_length: Annotated[int, typer.Option("--t5-max-length", min=1, max=512,
                                               help="T5 tokens per prompt (FLUX.1-Fill-dev: 512).")] = 512,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random weights.")] = 0,
) -> None:
    """Write a flux-shaped model (FLUX.1-Fill-dev, CLIP-L, T5-XXL and Qwen2.5-VL-7B at their published
    widths, one block or layer each, random bf16 weights, offline word-level tokenizers; ~2.2 GB),
    so the flux profile runs on a CPU: `layerboot run --config flux --set model.base=OUT/flux
    --set judge.model=OUT/qwen ...` (docs/data-engineers.md: Running the real profile)."""
    with user_errors():
        import time

        from models.pretrain.realsize import FluxShape, make_flux_shaped

        t0 = time.time()
        paths = make_flux_shaped(out, FluxShape(t5_max_length=t5_max_length), seed=seed)
        typer.echo(f"wrote {out} in {time.time() - t0:.0f} s; use " + " ".join(f"--set {k}={v}" for k, v in paths.items()))
