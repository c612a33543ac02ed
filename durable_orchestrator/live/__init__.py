"""Live text of running steps: workers publish `step.delta` pieces while the provider generates
them, API processes relay them to event-stream subscribers. Best effort by design: the durable
events (and each finished step's full text) stay in PostgreSQL; a delta lost on the way only
means a subscriber sees that text at `step.finished` instead of earlier."""
