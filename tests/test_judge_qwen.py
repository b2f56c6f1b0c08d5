"""The Qwen-VL judge's mechanics on a tiny Qwen2.5-VL with random weights (no download): the
tokenizer and chat template, the Yes/No readout, left-padded batching, NaN handling, reasons for
rejected items only, and loading from a local folder. Its scores mean nothing; its mechanics must."""
from __future__ import annotations

import math

import pytest
import torch

from configs import load_config
from models.iclora.grid import build_grid
from models.domains.registry import judge_of
from models.judge import Criterion, criteria_of
from models.judge.qwen import ANSWER_HINT, QwenVLJudge, answer_token_ids, build_tiny_qwen, tiny_tokenizer
from models.domains.logo_object.world import make_triplet
from storage.images import encode_png

YES, SPACE_YES, NO, SPACE_NO = 257, 258, 259, 260  # 256 byte tokens, then the hand-made merges


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # a 0.2 M-parameter model: threads only contend (measured 50x slower with 2 on a busy 2-core box)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_qwen(seed=0)


@pytest.fixture(scope="module")
def crit():
    return criteria_of(load_config("tiny").judge)


@pytest.fixture(scope="module")
def judge(tiny, crit):
    model, processor = tiny
    return QwenVLJudge(model, processor, crit, panel_size=64, batch_size=5, max_reason_tokens=6,
                       preamble=load_config("tiny").judge.preamble)


@pytest.fixture(scope="module")
def triplets():
    return [make_triplet(s, 64) for s in (1, 2, 3)]


def _panels(t):
    return (t.composite, t.logo, t.object)


def test_tokenizer_is_deterministic_and_answers_are_single_tokens():
    a, b = tiny_tokenizer(), tiny_tokenizer()
    assert a.get_vocab() == b.get_vocab() and len(a) == 256 + 8 + 7
    enc = lambda text: a(text, add_special_tokens=False).input_ids
    assert (enc("Yes"), enc(" Yes"), enc("No"), enc(" No")) == ([YES], [SPACE_YES], [NO], [SPACE_NO])
    assert enc("<|im_start|>assistant\n") == [a.convert_tokens_to_ids("<|im_start|>"), *enc("assistant"), *enc("\n")]


def test_scored_token_is_what_the_template_produces_after_assistant(tiny):
    model, processor = tiny
    assert answer_token_ids(processor) == (YES, NO)  # "Yes", not " Yes"
    convo = [{"role": "user", "content": [{"type": "text", "text": "Is it?"}]},
             {"role": "assistant", "content": [{"type": "text", "text": "Yes"}]}]
    text = processor.apply_chat_template(convo, tokenize=False)
    assert text.endswith("<|im_start|>assistant\nYes<|im_end|>\n")
    tok = processor.tokenizer
    ids = tok(text, add_special_tokens=False).input_ids
    start = tok.convert_tokens_to_ids("<|im_start|>")
    last = max(i for i, x in enumerate(ids) if x == start)  # the assistant turn
    enc = lambda t: tok(t, add_special_tokens=False).input_ids
    assert ids[last + 1 :] == enc("assistant\n") + [YES] + [tok.convert_tokens_to_ids("<|im_end|>")] + enc("\n")


def test_tiny_model_size(tiny):
    model, _ = tiny
    assert sum(p.numel() for p in model.parameters()) == 192_608
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"


def test_score_is_yes_no_softmax_of_the_last_logits(judge, triplets, tiny):
    model, processor = tiny
    c = judge.criteria[0]
    p = judge.score([_panels(triplets[0])], [None])[0].scores[c.name]
    inputs = judge._inputs([build_grid(*_panels(triplets[0]))], [judge.question(c, None) + ANSWER_HINT])
    with torch.inference_mode():
        logits = model(**inputs).logits[0, -1].float()
    want = torch.softmax(logits[[YES, NO]], dim=0)[0].item()
    assert p == pytest.approx(want, abs=1e-6) and 0.0 < p < 1.0


def test_batched_left_padded_scores_equal_one_by_one(judge, triplets):
    grids = [build_grid(*_panels(t)) for t in triplets]
    texts = ["Short?", "A much longer question about the three panels, so this row needs left padding?",
             judge.question(judge.criteria[2], "a red mug") + ANSWER_HINT]
    batched = judge.yes_probabilities(grids, texts)
    single = [judge.yes_probabilities([g], [t])[0] for g, t in zip(grids, texts)]
    assert batched == pytest.approx(single, abs=1e-5)
    assert len(set(round(p, 6) for p in batched)) == 3  # the rows really differ


def test_nan_logits_reject_that_item_and_the_batch_goes_on(judge, triplets, tiny):
    model, _ = tiny
    clean = judge.judge([_panels(t) for t in triplets])
    calls = {"n": 0}

    def poison(module, args, output):  # batch_size = 5 criteria: call k scores triplet k
        calls["n"] += 1
        return torch.full_like(output, math.nan) if calls["n"] == 2 else output

    handle = model.lm_head.register_forward_hook(poison)
    try:
        out = judge.judge([_panels(t) for t in triplets])
    finally:
        handle.remove()
    assert not out[1].accepted and "non-finite score (nan)" in out[1].reject_reason
    assert set(out[1].scores.values()) == {0.0}
    assert [out[0].scores, out[2].scores] == [clean[0].scores, clean[2].scores]


def test_corrupt_png_in_a_batch_is_rejected_others_scored(judge, triplets):
    good = [_panels(t) for t in triplets]
    c, l, o = good[1]
    out = judge.judge([good[0], (encode_png(c)[:50], l, o), good[2]])
    alone = judge.judge([good[0], good[2]])
    assert not out[1].accepted and "cannot decode" in out[1].reject_reason
    assert [out[0].scores, out[2].scores] == [j.scores for j in alone]


def test_reasons_are_generated_for_rejected_items_only_and_capped(tiny, crit, triplets):
    model, processor = tiny
    # random weights put every P(yes) near 0.52: a 0.5 threshold passes, 0.99 fails
    strict = [Criterion(c.name, c.question, 0.99 if c.name == "quality" else 0.0) for c in crit]
    judge = QwenVLJudge(model, processor, strict, panel_size=64, batch_size=8, max_reason_tokens=6)
    seen = []
    real = model.generate

    def spy(**kw):
        seen.append((kw["input_ids"].shape[0], kw["max_new_tokens"]))
        out = real(**kw)
        assert out.shape[1] - kw["input_ids"].shape[1] <= 6
        return out

    model.generate = spy
    try:
        out = judge.judge([_panels(t) for t in triplets[:2]])
        lenient = QwenVLJudge(model, processor, [Criterion(c.name, c.question, 0.0) for c in crit], panel_size=64)
        ok = lenient.judge([_panels(triplets[0])])
    finally:
        del model.generate
    assert seen == [(2, 6)]  # one generation batch: the failed criterion of the two rejected items
    assert all(not j.accepted and j.reasons["quality"].startswith("quality fails:") for j in out)
    assert all(j.reasons["logo_clean"].startswith("P(yes) = ") for j in out)
    assert ok[0].accepted and ok[0].reject_reason is None and len(seen) == 1  # nothing generated


def test_loads_from_a_local_folder_with_the_same_scores(tmp_path, tiny, crit, judge, triplets):
    model, processor = tiny
    model.save_pretrained(tmp_path / "tiny-qwen")
    processor.save_pretrained(tmp_path / "tiny-qwen")
    loaded = QwenVLJudge.from_pretrained(str(tmp_path / "tiny-qwen"), crit, device="cpu", panel_size=64,
                                         preamble=judge.preamble)
    assert (loaded.yes_id, loaded.no_id) == (YES, NO)
    a = judge.judge([_panels(triplets[0])])[0].scores
    b = loaded.judge([_panels(triplets[0])])[0].scores
    assert b == pytest.approx(a, abs=1e-6)

    cfg = load_config("tiny").model_copy(update={"judge": load_config("tiny").judge.model_copy(
        update={"kind": "qwen", "model": str(tmp_path / "tiny-qwen"), "device": "cpu"})})
    via_config = judge_of(cfg)
    assert isinstance(via_config, QwenVLJudge) and via_config.panel_size == 64


def test_qwen3_vl_runs_through_the_same_judge(crit, triplets):
    """Qwen3-VL: 16-px patches (qwen-vl-utils must resize by 32, not 28), same readout."""
    model, processor = build_tiny_qwen(seed=0, family="qwen3_vl")
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    judge = QwenVLJudge(model, processor, crit, panel_size=64, batch_size=5)
    assert judge.patch_size == 16 and (judge.yes_id, judge.no_id) == (YES, NO)
    grids = [build_grid(*_panels(t)) for t in triplets]
    texts = ["Short?", "A much longer question that needs padding on the left?", "Mid length question?"]
    batched = judge.yes_probabilities(grids, texts)
    assert batched == pytest.approx([judge.yes_probabilities([g], [t])[0] for g, t in zip(grids, texts)], abs=1e-5)
    assert all(0.0 < p < 1.0 for p in batched)


def test_yes_no_readout_on_a_hand_built_logit_vector():
    from models.judge.qwen import yes_no_score

    logits = torch.full((4, 8), -5.0)
    logits[0, 3], logits[0, 5] = 2.0, 0.0  # yes (id 3) clearly ahead
    logits[1, 3], logits[1, 5] = 0.0, 0.0  # a tie
    logits[2, 0] = 50.0  # an unrelated token dominates: only yes vs no counts
    logits[2, 3], logits[2, 5] = -1.0, 1.0
    logits[3, 5] = float("nan")
    p = yes_no_score(logits, yes_id=3, no_id=5)
    assert p[0].item() == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-7)  # 0.8808
    assert p[1].item() == 0.5 and p[2].item() == pytest.approx(1 / (1 + math.exp(2.0)), abs=1e-7)
    assert math.isnan(p[3].item())
