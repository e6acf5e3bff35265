"""The outcome of one rule-based scoring: the score and the answers it compared.

The extracted answers are kept because the LLM judge is asked about them (not about the whole
response), exactly as the reference passes its parsed prediction and gold to the judge.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class RuleResult:
    """score: the family's own type (int for docmath/choice and for a missing segment, float for
    doc-QA), see docs/rewards.md. prediction: the answer parsed from the response, None when
    nothing parsed (then the judge is never asked). gold: the parsed ground truth, None when it
    did not parse."""

    score: int | float
    prediction: str | None = None
    gold: str | None = None
