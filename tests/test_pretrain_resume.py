"""The base's transformer stage (the longest job in the project: hours on 2 cores) checkpoints and
resumes: a run killed after a checkpoint, run again, ends with exactly the weights and losses of a
run that was never interrupted."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from models.iclora.backbone import load_backbone
from models.pretrain.base import PretrainRecipe, pretrain_transformer

RECIPE = PretrainRecipe(panel_size=32, transformer_examples=6, drawing_examples=4, transformer_steps=6,
                        transformer_batch=2)


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


def test_a_killed_transformer_stage_resumes_exactly(random_tiny_base, tmp_path, one_thread):
    def fresh():
        return load_backbone(str(random_tiny_base), torch.float32, "cpu")

    whole = fresh()
    expected = pretrain_transformer(whole, RECIPE, log=lambda m: None)

    ckpt = tmp_path / "checkpoint-transformer"
    with pytest.raises(Killed):
        pretrain_transformer(fresh(), RECIPE, log=lambda m: None, checkpoint=ckpt, checkpoint_every=2,
                             on_checkpoint=kill_at(4))
    lines = []
    resumed = fresh()
    got = pretrain_transformer(resumed, RECIPE, log=lines.append, checkpoint=ckpt, checkpoint_every=2)
    assert f"transformer: resumed at step 4 from {ckpt}" in lines
    assert got == expected and got["steps"] == 6
    for (name, a), b in zip(whole.transformer.state_dict().items(), resumed.transformer.state_dict().values()):
        assert torch.equal(a, b), name

    with pytest.raises(ValueError, match="checkpoint of another recipe"):
        other = dataclasses.replace(RECIPE, transformer_lr=1e-4)
        pretrain_transformer(fresh(), other, log=lambda m: None, checkpoint=ckpt, checkpoint_every=2)
