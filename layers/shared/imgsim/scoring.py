"""User-facing similarity scores.

Vectors are L2-normalized, so Qdrant's Cosine score is the cosine similarity in
[-1, 1]. Users get ``score = max(0, cosine)`` in [0, 1] (an image with negative
cosine is as unlike as it gets; a negative "similarity" would only confuse) and
``percent = round(100 * score, 1)``: the original demo's "similarity percentage".
"""

from __future__ import annotations


def score_from_cosine(cosine: float) -> float:
    return min(1.0, max(0.0, float(cosine)))


def percent_from_score(score: float) -> float:
    return round(100.0 * score, 1)
