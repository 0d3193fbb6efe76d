"""Promotion by measurement: whether a distilled student becomes the default encoder.

The rule: in one `edge-dse eval` run, the student's int8 export has nDCG@10 >= the baseline
int8's on every held-out split, and encodes >= 2x the baseline's docs/s on the same passages
(both cut at 256 tokens). The verdict, with the numbers it was decided on, is written into the
student's card.json as "promotion"; config.default_model_name() reads it at run time, so the
default follows the measurement and never a hand edit.
Training-time code: not imported by `import edge_dse`.
"""

from __future__ import annotations

from .evaluate import BASELINE_ROW, STUDENT_ROW

MIN_SPEEDUP = 2.0


def decide(result: dict, student: str = STUDENT_ROW, baseline: str = BASELINE_ROW, min_speedup: float = MIN_SPEEDUP) -> dict:
    """{"default": bool, "rule": str, "splits": {split: [student, baseline]}, "speedup": x, "short": [...]}"""
    splits, short = {}, []
    for name, split in result["splits"].items():
        rows = split["rows"]
        if student not in rows or baseline not in rows:
            short.append(f"{name}: no {student if student not in rows else baseline} row")
            continue
        s, b = rows[student]["ndcg@10"], rows[baseline]["ndcg@10"]
        splits[name] = [s, b]
        if s < b:
            short.append(f"{name}: nDCG@10 {s:.3f} < {b:.3f} (-{b - s:.3f})")
    speed = result.get("speed", {})
    speedup = round(speed[student] / speed[baseline], 2) if speed.get(student) and speed.get(baseline) else None
    if speedup is None:
        short.append("speed: not measured")
    elif speedup < min_speedup:
        short.append(f"speed: {speedup}x the baseline's docs/s < {min_speedup}x")
    return {"default": not short and bool(splits), "rule": f"nDCG@10 >= baseline int8 on every split and >= {min_speedup}x its docs/s",
            "splits": splits, "speedup": speedup, "short": short}
