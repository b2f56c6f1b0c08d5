"""The judge: per-criterion scores in [0, 1] with reasons, and the accept rule (see base.py).

    build_judge(config)          the judge a config asks for (`judge.kind`: measure | qwen)
    MeasureJudge                 explicit image measurements (tiny profile, no model)
    QwenVLJudge                  Qwen2.5-VL / Qwen3-VL, VQAScore-style yes/no (models.judge.qwen)
    corruptions.build_benchmark  the labelled corruption benchmark used to calibrate both
"""
from models.judge.base import Criterion, Judge, Judgement, Scored, build_judge, criteria_of, failing
from models.judge.measure import MeasureJudge

__all__ = ["Criterion", "Judge", "Judgement", "MeasureJudge", "Scored", "build_judge", "criteria_of", "failing"]
