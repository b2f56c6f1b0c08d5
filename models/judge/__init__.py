"""The judge: per-criterion scores in [0, 1] with reasons, and the accept rule (see base.py).
What every layer task shares; a task's own checks and benchmark live in models/domains/<task>/.

    build_judge(config, ...)  the judge a config asks for (`judge.kind`: measure | qwen)
    MeasureJudge              explicit image measurements (measure.py; image_ops.py: their operations)
    QwenVLJudge               Qwen2.5-VL / Qwen3-VL, VQAScore-style yes/no (qwen.py)
    calibrate                 thresholds and AUROC on a task's labelled benchmark (calibrate.py)
"""
from models.judge.base import Criterion, Judge, Judgement, Scored, criteria_of, failing
from models.judge.measure import MeasureJudge


def build_judge(config, measure_judge: type[MeasureJudge], thresholds: dict[str, float] | None = None,
                panel_size: int | None = None) -> Judge:
    """The judge a config asks for (`judge.kind`), optionally with some thresholds replaced and for
    another panel size than `data.panel_size`; `measure_judge` is the layer task's measurement
    judge (its `Domain.judge`; models.domains.registry.judge_of passes it)."""
    section = config.judge
    criteria = criteria_of(section)
    size = panel_size or config.data.panel_size
    if section.kind == "measure":
        judge: Judge = measure_judge(criteria, panel_size=size)
    else:
        from models.judge.qwen import QwenVLJudge  # transformers: imported only when asked for

        judge = QwenVLJudge.from_pretrained(section.model, criteria, panel_size=size,
                                            dtype=section.dtype, device=section.device,
                                            attn_implementation=section.attn_implementation,
                                            min_pixels=section.min_pixels, max_pixels=section.max_pixels,
                                            preamble=section.preamble, batch_size=section.batch_size,
                                            max_reason_tokens=section.max_reason_tokens)
    return judge.with_thresholds(thresholds) if thresholds else judge


__all__ = ["Criterion", "Judge", "Judgement", "MeasureJudge", "Scored", "build_judge", "criteria_of", "failing"]
