"""A fake OpenAI-compatible Chat Completions server for the tests and benchmarks (not shipped
in the wheel): scripted replies, fault injection, and plans built from the planner's models.

Modules: `server` (the HTTP app and its lifecycle), `replies` (scripted replies, the default
answer, recorded requests), `faults` (injected errors, slowness, dropped connections), `plans`
(plan answers), `wire` (the OpenAI response and error bodies); `python -m fake_openai` runs it
as a process."""

from fake_openai.faults import Faults
from fake_openai.replies import Hold, RecordedRequest, Reply
from fake_openai.server import FakeOpenAI

__all__ = ["FakeOpenAI", "Faults", "Hold", "RecordedRequest", "Reply"]
