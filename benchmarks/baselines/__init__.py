"""What a user would pick instead of this product, run against the same fake LLM:
a raw Temporal SDK workflow and a Celery + Redis chain, each with 3 steps of one LLM call."""
