"""Search modes, and the default one (kept apart so the CLI can name it without importing the library)."""

MODES = ("vector", "keyword", "hybrid")

# Measured with `python -m bench.modes` (the Python docs FAQ: 171 questions whose answers were
# indexed without their question headings), baseline model, MRR@10 vector / keyword / hybrid:
# 0.838 / 0.616 / 0.802 on the answers alone, 0.706 / 0.398 / 0.626 with 150 other docs files
# as distractors. Equal-weight fusion with a much weaker keyword ranker pulls good vector
# results down, so vector is the default; keyword and hybrid stay for names and identifiers.
DEFAULT_MODE = "vector"
