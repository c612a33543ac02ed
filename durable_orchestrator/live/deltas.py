"""The `step.delta` message: what a piece of streamed text carries and how it is encoded."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

#: One channel for every task: an API process listens once and routes by task id.
CHANNEL = "orch_step_deltas"
#: Characters of text per message, so that any UTF-8 text stays under NOTIFY's 8000-byte cap.
MAX_TEXT_CHARS = 1500


@dataclass(frozen=True)
class StepDelta:
    task_id: str
    step: int
    attempt: int  # a retried step streams again from the start, under a new attempt
    turn: int  # a tool loop's LLM turn
    seq: int  # per (step, attempt, turn), from 0, without gaps on the sending side
    text: str

    def encode(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def decode(cls, payload: str) -> StepDelta | None:
        try:
            return cls(**json.loads(payload))
        except (ValueError, TypeError):
            return None

    def event_data(self) -> dict[str, object]:
        """The SSE `data` of a `step.delta` event."""
        return {"index": self.step, "attempt": self.attempt, "turn": self.turn, "seq": self.seq, "text": self.text}
