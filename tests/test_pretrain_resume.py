"""The base's decoder and transformer stages (the longest jobs in the project: an hour or more each on
2 cores) checkpoint and resume: a run killed after a checkpoint, run again, ends with exactly the
weights and losses of a run that was never interrupted."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models.iclora.backbone import load_backbone
from models.pretrain.base import PretrainRecipe, pretrain_decoder, pretrain_transformer

RECIPE = PretrainRecipe(panel_size=32, transformer_examples=6, drawing_examples=4, transformer_steps=6,
                        transformer_batch=2, decoder_steps=6, decoder_batch=2)


class Killed(Exception):
    pass


def kill_at(step: int):
    def on_checkpoint(at: int) -> None:
        if at == step:
            raise Killed
    return on_checkpoint


@pytest.fixture
def one_thread():
    """Bit-exact comparisons across runs; the rest of the suite keeps its threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("stage, run, trained, other, refusal", [
    ("transformer", pretrain_transformer, "transformer", {"transformer_lr": 1e-4}, "checkpoint of another recipe"),
    ("decoder", pretrain_decoder, "vae", {"decoder_lr": 1e-4}, "checkpoint of another decoder fit"),
])
def test_a_killed_stage_resumes_exactly(stage, run, trained, other, refusal, random_tiny_base, tmp_path, one_thread):
    def fresh():
        return load_backbone(str(random_tiny_base), torch.float32, "cpu")

    whole = fresh()
    expected = run(whole, RECIPE, log=lambda m: None)

    ckpt = tmp_path / f"checkpoint-{stage}"
    with pytest.raises(Killed):
        run(fresh(), RECIPE, log=lambda m: None, checkpoint=ckpt, checkpoint_every=2, on_checkpoint=kill_at(4))
    lines = []
    resumed = fresh()
    assert run(resumed, RECIPE, log=lines.append, checkpoint=ckpt, checkpoint_every=2) == expected
    assert f"{stage}: resumed at step 4 from {ckpt}" in lines
    changed = 0
    for (name, a), b, before in zip(getattr(whole, trained).state_dict().items(),
                                    getattr(resumed, trained).state_dict().values(),
                                    getattr(fresh(), trained).state_dict().values()):
        assert torch.equal(a, b), name
        changed += not torch.equal(a, before)
    assert changed > 0  # it trained
    # the decoder stage trains the decoder only: the encoder is the PCA's
    assert all(torch.equal(a, b) for a, b in zip(whole.vae.encoder.parameters(), fresh().vae.encoder.parameters()))

    with pytest.raises(ValueError, match=refusal):
        run(fresh(), dataclasses.replace(RECIPE, **other), log=lambda m: None, checkpoint=ckpt, checkpoint_every=2)


@pytest.mark.slow
def test_destroys_nothing_it_does_not_own_pretrain_tiny_refuses_an_out_folder_with_foreign_files(
        random_tiny_base, tmp_path, one_thread):
    """`pretrain-tiny --out DIR` replaces and deletes DIR/checkpoint-transformer/ whole and overwrites the
    base's files: a folder holding anything else is refused before anything runs (it deleted a user's
    checkpoint-transformer/ with their files in it, exit 0). Its own layout (a base it wrote, a copy of the
    shipped one, what a killed stage leaves) is trained into."""
    import re
    import shutil

    from typer.testing import CliRunner

    from flows.cli import app
    from models.iclora.tiny import TinySpec
    from models.pretrain.base import owns, pretrain_tiny
    from storage.fs import ForeignFiles, refuse_foreign_files

    out = tmp_path / "base"
    shutil.copytree(random_tiny_base, out)
    (out / "checkpoint-transformer").mkdir()
    (out / "checkpoint-transformer" / "notes.txt").write_text("mine")
    message = (f"{out}: holds checkpoint-transformer/notes.txt, which `layerboot pretrain-tiny` does not write: "
               "name a new or empty folder for --out (nothing was changed)")
    with pytest.raises(ForeignFiles, match=re.escape(message)):
        pretrain_tiny(out, TinySpec(), RECIPE, ("transformer",), log=lambda m: None)
    res = CliRunner().invoke(app, ["pretrain-tiny", "--out", str(out), "--stage", "transformer",
                                   "--transformer-steps", "1"])
    assert res.exit_code == 2 and res.stderr.strip() == f"error: {message}", res.output
    assert (out / "checkpoint-transformer" / "notes.txt").read_text() == "mine"

    (out / "checkpoint-transformer" / "notes.txt").unlink()
    (out / "checkpoint-transformer" / "trainer_state.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ForeignFiles, match="holds checkpoint-transformer/trainer_state.json, which"):
        pretrain_tiny(out, TinySpec(), RECIPE, ("transformer",), log=lambda m: None)
    (out / "checkpoint-transformer" / "trainer_state.json").unlink()
    (out / "transformer" / "README.md").write_text("mine")
    with pytest.raises(ForeignFiles, match="holds transformer/README.md, which"):
        pretrain_tiny(out, TinySpec(), RECIPE, ("transformer",), log=lambda m: None)
    (out / "transformer" / "README.md").unlink()

    record = pretrain_tiny(out, TinySpec(), RECIPE, ("transformer",), log=lambda m: None)  # its own folder
    assert record["results"]["transformer"]["steps"] == 6 and not (out / "checkpoint-transformer").exists()
    for base in (out, "models/tiny_base", "models/tiny_base_intrinsic"):
        refuse_foreign_files(base, owns, "layerboot pretrain-tiny")  # every base it wrote is its own


def test_split_masks_train_relations_with_a_kept_panel_and_drawings_from_text_alone(random_tiny_base, monkeypatch,
                                                                                   one_thread):
    """PretrainRecipe.masks="split": every relation batch keeps a panel (the answer is in the context),
    every drawing batch is text-to-image; "every" (the shipped bases) draws from all three masks for both."""
    import models.pretrain.base as base
    from models.iclora.grid import Task

    seen: dict[str, set] = {}

    def spy(backbone, enc, idx, tasks, prompts):
        seen.setdefault("drawings" if prompts is base.DRAWING_PROMPTS else "relations", set()).update(tasks)
        return make_batch(backbone, enc, idx, tasks, prompts)

    make_batch = base.make_batch
    monkeypatch.setattr(base, "make_batch", spy)
    recipe = dataclasses.replace(RECIPE, transformer_steps=24, drawing_share=0.5)
    pretrain_transformer(load_backbone(str(random_tiny_base), torch.float32, "cpu"),
                         dataclasses.replace(recipe, masks="split"), log=lambda m: None)
    assert seen == {"relations": {Task.DECOMPOSE, Task.COMPOSE}, "drawings": {Task.GENERATE}}
    seen.clear()
    pretrain_transformer(load_backbone(str(random_tiny_base), torch.float32, "cpu"), recipe, log=lambda m: None)
    assert seen == {"relations": set(base.TASKS), "drawings": set(base.TASKS)}
    with pytest.raises(ValueError, match="masks"):
        PretrainRecipe(masks="some")


def test_a_curriculum_trains_its_stages_in_order_and_resumes_inside_one(random_tiny_base, tmp_path, monkeypatch,
                                                                       one_thread):
    """PretrainRecipe.curriculum: each step's batch holds only its stage's relations (drawn by name,
    cut_out included), a stage's drawing share is its own, and a run killed inside the second stage
    resumes exactly."""
    import models.pretrain.base as base
    from models.pretrain.base import Stage

    curriculum = (Stage(("copy",), 4), Stage(("copy", "cut_out"), 4, drawing_share=0.5))
    recipe = dataclasses.replace(RECIPE, transformer_steps=8, curriculum=curriculum)
    batches: list[set] = []

    def spy(backbone, enc, idx, tasks, prompts):
        named = {"all three panels are the same image": "copy",
                 "left is the middle layer made small and laid over the right background": "cut_out"}
        batches.append({"drawing"} if prompts is base.DRAWING_PROMPTS else {named[enc.prompts[i]] for i in idx})
        return make_batch(backbone, enc, idx, tasks, prompts)

    make_batch = base.make_batch
    monkeypatch.setattr(base, "make_batch", spy)
    whole = load_backbone(str(random_tiny_base), torch.float32, "cpu")
    expected = pretrain_transformer(whole, recipe, log=lambda m: None)
    first, second = batches[:4], batches[4:]
    assert all(b == {"copy"} for b in first)
    assert set().union(*second) == {"copy", "cut_out", "drawing"}
    assert expected["steps"] == 8 and expected["drawing_steps"] == sum(b == {"drawing"} for b in second)

    ckpt = tmp_path / "checkpoint-transformer"
    with pytest.raises(Killed):
        pretrain_transformer(load_backbone(str(random_tiny_base), torch.float32, "cpu"), recipe, log=lambda m: None,
                             checkpoint=ckpt, checkpoint_every=3, on_checkpoint=kill_at(6))
    resumed = load_backbone(str(random_tiny_base), torch.float32, "cpu")
    assert pretrain_transformer(resumed, recipe, log=lambda m: None, checkpoint=ckpt, checkpoint_every=3) == expected
    for (name, a), b in zip(whole.transformer.state_dict().items(), resumed.transformer.state_dict().values()):
        assert torch.equal(a, b), name
    copies_only = dataclasses.replace(RECIPE, transformer_steps=2, curriculum=(Stage(("copy",), 2),))
    assert pretrain_transformer(load_backbone(str(random_tiny_base), torch.float32, "cpu"), copies_only,
                                log=lambda m: None)["drawing_steps"] == 0  # no stage draws: no drawing is made
    with pytest.raises(ValueError, match="sum of the curriculum"):
        dataclasses.replace(recipe, transformer_steps=9)
    with pytest.raises(ValueError, match="unknown: \\['paste'\\]"):
        Stage(("paste",), 4)
