"""Token usage normalised to the span contract's convention.

``input_tokens`` is the total input including cache reads and writes; ``output_tokens`` is
the total output including reasoning. Cache and reasoning counts are subsets of those totals,
so nothing is counted twice. A count that was not reported is ``None``, never 0.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenUsage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None

    @property
    def measured(self) -> bool:
        """Whether the provider reported any usage at all."""
        return self.input_tokens is not None or self.output_tokens is not None
