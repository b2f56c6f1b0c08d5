"""The Qwen-VL judge: each criterion is a yes/no question about the grid image, scored VQAScore-style.

score = P("Yes") / (P("Yes") + P("No")) = sigmoid(logit_yes - logit_no), read from the next-token
logits after the chat template's generation prompt ("<|im_start|>assistant\\n"), never parsed from
free text. "Yes" here is the token the template really produces there: for Qwen's tokenizer that
is "Yes" without a leading space, a different token from " Yes" (`answer_token_ids` derives it).

Works with Qwen2.5-VL and Qwen3-VL (`AutoModelForImageTextToText`), by hub id or local folder;
bf16 + SDPA on CUDA, float32 on CPU. One sequence per (triplet, criterion); prompts differ in
length, so the tokenizer pads on the left and the answer logits sit at the last position of every
row. Reasons are generated (greedy, `max_reason_tokens`) only for the criteria a rejected item fails.

`build_tiny_qwen` makes a ~0.2 M-parameter Qwen2.5-VL (or Qwen3-VL) from config with random
weights and a deterministic byte-level tokenizer: it exercises this code path in tests without a
download. Its scores mean nothing (random weights); the tiny profile's judge is measure.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image

from models.iclora.backbone import resolve_device
from models.iclora.grid import build_grid
from models.judge.base import Criterion, Judge, Scored

ANSWER_HINT = " Please answer yes or no."
REASON_HINT = " Answer no or yes, then say why in a few words."


def answer_token_ids(processor) -> tuple[int, int]:
    """(yes_id, no_id): the first token the chat template produces for an assistant answer "Yes" /
    "No", found by rendering the conversation with and without the answer. Refuses a tokenizer
    that splits the word, since then the first token would not mean the answer."""
    tok = processor.tokenizer
    user = [{"role": "user", "content": [{"type": "text", "text": "Is this a test?"}]}]
    prompt = processor.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False).input_ids
    ids = []
    for word in ("Yes", "No"):
        convo = user + [{"role": "assistant", "content": [{"type": "text", "text": word}]}]
        full = processor.apply_chat_template(convo, tokenize=False, add_generation_prompt=False)
        full_ids = tok(full, add_special_tokens=False).input_ids
        if not full.startswith(prompt) or full_ids[: len(prompt_ids)] != prompt_ids:
            raise ValueError("the chat template's answer does not extend its generation prompt")
        first = full_ids[len(prompt_ids)]
        if tok.decode([first]) != word:
            raise ValueError(f"answer {word!r} is not a single token after the generation prompt "
                             f"(first token decodes to {tok.decode([first])!r})")
        ids.append(first)
    return ids[0], ids[1]


def yes_no_score(logits: torch.Tensor, yes_id: int, no_id: int) -> torch.Tensor:
    """VQAScore readout: next-token logits [B, V] -> P(Yes) / (P(Yes) + P(No)) = sigmoid(yes - no)
    per row; NaN where either logit is not finite (the judge then rejects that item)."""
    logits = logits.float()
    yes, no = logits[:, yes_id], logits[:, no_id]
    p = torch.sigmoid(yes - no)  # = softmax over the two answers
    return torch.where(torch.isfinite(yes) & torch.isfinite(no), p, torch.full_like(p, math.nan))


class QwenVLJudge(Judge):
    kind = "qwen"

    def __init__(self, model, processor, criteria: Sequence[Criterion], *, panel_size: int | None = None,
                 batch_size: int = 8, max_reason_tokens: int = 24, preamble: str = "",
                 min_pixels: int = 384 * 128, max_pixels: int = 1536 * 512, name: str = "qwen"):
        super().__init__(criteria, panel_size, batch_size)
        self.model = model.eval()
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"  # answers at the last position of every row
        self.yes_id, self.no_id = answer_token_ids(processor)
        self.max_reason_tokens = max_reason_tokens
        self.preamble = preamble.strip()
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.patch_size = int(getattr(model.config.vision_config, "patch_size", 14))
        self.name = name

    @classmethod
    def from_pretrained(cls, name_or_path: str, criteria: Sequence[Criterion], *, dtype: str = "bfloat16",
                        device: str = "auto", attn_implementation: str = "sdpa", **kw) -> "QwenVLJudge":
        """Load a Qwen2.5-VL / Qwen3-VL checkpoint (hub id or local folder); safetensors weights only,
        never a pickle (.bin) fallback."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        dev = torch.device(resolve_device(device))
        torch_dtype = getattr(torch, dtype) if dev.type == "cuda" else torch.float32  # bf16 is for CUDA
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=torch_dtype, use_safetensors=True,
                                                            attn_implementation=attn_implementation)
        processor = AutoProcessor.from_pretrained(name_or_path)
        return cls(model.to(dev), processor, criteria, name=str(name_or_path), **kw)

    def describe(self) -> dict:
        return {**super().describe(), "model": self.name, "yes_token": self.yes_id, "no_token": self.no_id,
                "dtype": str(next(self.model.parameters()).dtype)}

    # ---- prompts --------------------------------------------------------------------------
    def question(self, criterion: Criterion, prompt: str | None) -> str:
        q = criterion.question.format(prompt=prompt or "a product with a logo")
        return f"{self.preamble} {q}".strip()

    def _inputs(self, grids: list[Image.Image], texts: list[str]):
        from qwen_vl_utils import process_vision_info

        messages = [[{"role": "user", "content": [
            {"type": "image", "image": g, "min_pixels": self.min_pixels, "max_pixels": self.max_pixels},
            {"type": "text", "text": t}]}] for g, t in zip(grids, texts)]
        chats = [self.processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
        images, _ = process_vision_info(messages, image_patch_size=self.patch_size)
        inputs = self.processor(text=chats, images=images, padding=True, return_tensors="pt")
        return inputs.to(next(self.model.parameters()).device)

    # ---- scoring --------------------------------------------------------------------------
    @torch.inference_mode()
    def yes_probabilities(self, grids: list[Image.Image], texts: list[str]) -> list[float]:
        """P(Yes) / (P(Yes) + P(No)) for each (grid, question); NaN when either logit is not finite."""
        out: list[float] = []
        for s in range(0, len(texts), self.batch_size):
            inputs = self._inputs(grids[s : s + self.batch_size], texts[s : s + self.batch_size])
            logits = self.model(**inputs, logits_to_keep=1).logits[:, -1, :]
            out.extend(yes_no_score(logits, self.yes_id, self.no_id).tolist())
        return out

    def score(self, batch, prompts) -> list[Scored]:
        grids = [build_grid(c, l, o) for c, l, o in batch]
        jobs = [(i, c) for i in range(len(batch)) for c in self.criteria]
        probs = self.yes_probabilities([grids[i] for i, _ in jobs],
                                       [self.question(c, prompts[i]) + ANSWER_HINT for i, c in jobs])
        results = [Scored({}, {}) for _ in batch]
        for (i, c), p in zip(jobs, probs):
            results[i].scores[c.name] = p
            results[i].reasons[c.name] = f"P(yes) = {p:.2f}"
        return results

    @torch.inference_mode()
    def explain(self, batch, prompts, failed) -> list[dict[str, str]]:
        """A short generated answer for each failed criterion of each rejected item."""
        by_name = {c.name: c for c in self.criteria}
        jobs = [(k, n) for k, names in enumerate(failed) for n in names]
        out: list[dict[str, str]] = [{} for _ in batch]
        tok = self.processor.tokenizer
        for s in range(0, len(jobs), self.batch_size):
            part = jobs[s : s + self.batch_size]
            inputs = self._inputs([build_grid(*batch[k]) for k, _ in part],
                                  [self.question(by_name[n], prompts[k]) + REASON_HINT for k, n in part])
            gen = self.model.generate(**inputs, max_new_tokens=self.max_reason_tokens, do_sample=False,
                                      pad_token_id=tok.pad_token_id)
            texts = tok.batch_decode(gen[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            for (k, n), text in zip(part, texts):
                out[k][n] = f"{n} fails: {' '.join(text.split()) or '(no words)'}"
        return out


# ----------------------------------------------------------------------------- a tiny Qwen2.5-VL

CHAT_TEMPLATE = (  # Qwen2.5-VL's template, reduced to text and image parts
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")
# Merges built by hand, not trained: `tokenizers`' BpeTrainer is not deterministic across runs.
# "Ġ" is GPT-2's byte-level space, so "ĠYes" is " Yes". Answers must be single tokens.
MERGES = (("Y", "e"), ("Ye", "s"), ("Ġ", "Yes"), ("N", "o"), ("Ġ", "No"), ("y", "e"), ("ye", "s"), ("n", "o"))


def byte_alphabet() -> list[str]:
    """GPT-2's byte-level alphabet: one printable character per byte value, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def tiny_tokenizer():
    """A deterministic byte-level BPE `Qwen2Tokenizer`: 256 byte tokens, the hand-made merges, then
    the special tokens. Same ids on every machine and every run."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab = {ch: i for i, ch in enumerate(byte_alphabet())}
    for a, b in MERGES:
        vocab[a + b] = len(vocab)
    for s in SPECIAL_TOKENS:
        vocab[s] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=list(MERGES), eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIAL_TOKENS], special_tokens=True)
    return tok


@dataclass(frozen=True)
class TinyQwenSpec:
    hidden: int = 64  # text width; head_dim = hidden / heads = 16, so mrope_section sums to 8
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    vision_hidden: int = 32
    vision_layers: int = 2
    mrope_section: tuple[int, int, int] = (2, 3, 3)
    min_pixels: int = 384 * 128  # the 192x64 grid upscaled: ~70 merged vision tokens
    max_pixels: int = 384 * 128 * 2
    intermediate: int = 0  # text MLP width; 0 = 2 * hidden
    vision_intermediate: int = 0  # 0 = 2 * vision_hidden
    vision_heads: int = 2
    vocab_size: int = 0  # 0 = the tokenizer's size (a real-size model keeps its own vocabulary size)


# Qwen2.5-VL-7B-Instruct's published sizes: random weights at real size, for GPU benchmarks.
QWEN25_VL_7B = TinyQwenSpec(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vision_hidden=1280,
                            vision_layers=32, vision_heads=16, vision_intermediate=3420, mrope_section=(16, 24, 24),
                            vocab_size=152064)


def build_tiny_qwen(spec: TinyQwenSpec = TinyQwenSpec(), seed: int = 0, family: str = "qwen2_5_vl"):
    """(model, processor): a Qwen2.5-VL (or, with family="qwen3_vl", a Qwen3-VL: 16-px patches,
    deepstack) built from config with random weights (seeded), and its processor (tiny tokenizer,
    Qwen2-VL image processor, chat template). No download."""
    from transformers import AutoModelForImageTextToText
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    if family not in ("qwen2_5_vl", "qwen3_vl"):
        raise ValueError(f"unknown family {family!r}: qwen2_5_vl or qwen3_vl")
    qwen3 = family == "qwen3_vl"
    patch = 16 if qwen3 else 14
    tok = tiny_tokenizer()
    ids = {s: tok.convert_tokens_to_ids(s) for s in SPECIAL_TOKENS}
    image_processor = Qwen2VLImageProcessor(min_pixels=spec.min_pixels, max_pixels=spec.max_pixels,
                                            patch_size=patch, merge_size=2, temporal_patch_size=2)
    text = dict(vocab_size=spec.vocab_size or len(tok), hidden_size=spec.hidden,
                intermediate_size=spec.intermediate or 2 * spec.hidden,
                num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
                max_position_embeddings=4096, pad_token_id=ids["<|endoftext|>"],
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": list(spec.mrope_section)})
    vision = dict(depth=spec.vision_layers, hidden_size=spec.vision_hidden,
                  intermediate_size=spec.vision_intermediate or 2 * spec.vision_hidden,
                  num_heads=spec.vision_heads, out_hidden_size=spec.hidden, patch_size=patch, spatial_merge_size=2,
                  temporal_patch_size=2)
    special = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                   vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    if qwen3:
        from transformers import Qwen3VLConfig, Qwen3VLProcessor
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

        text.update(head_dim=spec.hidden // spec.heads)
        text["rope_parameters"]["mrope_interleaved"] = True
        vision.update(num_position_embeddings=64, deepstack_visual_indexes=[0])
        config = Qwen3VLConfig(text_config=text, vision_config=vision, **special)
        processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tok,
                                     video_processor=Qwen3VLVideoProcessor(), chat_template=CHAT_TEMPLATE)
    else:
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        text.update(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])
        vision.update(window_size=112, fullatt_block_indexes=[spec.vision_layers - 1])
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **special)
        processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tok,
                                        video_processor=Qwen2VLVideoProcessor(), chat_template=CHAT_TEMPLATE)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, attn_implementation="sdpa")
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    return model.eval(), processor
