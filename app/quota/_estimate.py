"""How many tokens to reserve before a call: what the request may write, guessed from what this key's
requests to this model really wrote lately.

A request that sets ``max_tokens`` (or its kin) reserves that much output. One that sets none
reserves a guess: twice the largest of this key's last few outputs for the model, at least 256,
at most the model's own output limit, and 1,024 before the key has used the model at all. The
reservation settles to the real count when the answer ends, so a low guess lets a key overshoot
its tokens-per-minute by one answer at most, and a high one only delays its next request.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["FIRST_GUESS", "OutputEstimates"]

FIRST_GUESS = 1024
FLOOR = 256
REMEMBERED = 8  # outputs kept per key and model
KEPT = 100_000  # keys and models remembered at most (least recently used forgotten first)


class OutputEstimates:
    def __init__(self, kept: int = KEPT) -> None:
        self._recent: OrderedDict[tuple[str, str], list[int]] = OrderedDict()
        self._kept = kept

    def guess(self, key_id: str, model: str, model_limit: int | None) -> int:
        recent = self._recent.get((key_id, model))
        guess = FIRST_GUESS if not recent else max(FLOOR, 2 * max(recent))
        return min(guess, model_limit) if model_limit else guess

    def observe(self, key_id: str, model: str, output_tokens: int) -> None:
        slot = (key_id, model)
        recent = self._recent.get(slot)
        if recent is None:
            recent = self._recent[slot] = []
            if len(self._recent) > self._kept:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(slot)
        recent.append(output_tokens)
        if len(recent) > REMEMBERED:
            del recent[0]
