"""A fake OpenAI-compatible Chat Completions server for the tests and benchmarks (not shipped
in the wheel): scripted replies, fault injection, and plans built from the planner's schema."""

from fake_openai.server import FakeOpenAI, Faults, Reply

__all__ = ["FakeOpenAI", "Faults", "Reply"]
