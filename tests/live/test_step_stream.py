"""StepStream: how a step's live text is batched into publishes."""

from __future__ import annotations

import asyncio

from durable_orchestrator.live.deltas import StepDelta
from durable_orchestrator.live.publisher import StepStream


class Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.payloads: list[str] = []
        self.delay = delay

    async def publish(self, payload: str) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.payloads.append(payload)

    async def close(self) -> None:
        return None

    def texts(self) -> list[str]:
        return [decoded(p).text for p in self.payloads]


def decoded(payload: str) -> StepDelta:
    delta = StepDelta.decode(payload)
    assert delta is not None
    return delta


def stream(rec: Recorder, flush_secs: float) -> StepStream:
    return StepStream(rec, task_id="t1", step=0, attempt=1, turn=0, flush_secs=flush_secs)


async def test_first_piece_goes_out_at_once_and_the_rest_is_batched() -> None:
    rec = Recorder()
    s = stream(rec, flush_secs=3600)
    for word in ["Hello", " wide", " world"]:
        await s.write(word)
    assert rec.texts() == ["Hello"]  # the rest waits for the interval (or close)
    await s.close()
    assert rec.texts() == ["Hello", " wide world"]


async def test_close_does_not_wait_out_the_interval() -> None:
    # An hour-long interval: close() must send the rest now, or every LLM call of a step
    # would end an interval late.
    rec = Recorder()
    s = stream(rec, flush_secs=3600)
    await s.write("a")
    await s.write("b")
    await asyncio.wait_for(s.close(), timeout=10)
    assert "".join(rec.texts()) == "ab"


async def test_close_lets_a_publish_on_the_wire_finish_in_order() -> None:
    rec = Recorder(delay=0.05)
    s = stream(rec, flush_secs=0.01)
    await s.write("one")
    await s.write(" two")
    await asyncio.sleep(0.03)  # the timer's flush of " two" is on the wire now
    await s.write(" three")
    await asyncio.wait_for(s.close(), timeout=10)
    assert "".join(rec.texts()) == "one two three"
    seqs = [decoded(p).seq for p in rec.payloads]
    assert seqs == sorted(seqs) == list(range(len(seqs)))
