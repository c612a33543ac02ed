"""`python -m fake_openai --port 0`: the fake server as a subprocess (benchmarks, fault tests).

Prints ``READY <base_url>`` once listening, as its only line on stdout; exits on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any

from fake_openai.faults import Faults
from fake_openai.replies import Reply
from fake_openai.server import FakeOpenAI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fake_openai", description="Fake OpenAI Chat Completions server."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    for rate in ("429", "500", "503", "slow", "drop", "malformed"):
        parser.add_argument(f"--rate-{rate}", type=float, default=0.0)
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--slow-secs", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stream-words", type=int, default=0,
                        help="streamed requests get an answer of this many words (default: the usual one)")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed words")
    parser.add_argument("--stamp-chunks", action="store_true",
                        help="streamed words carry their send time (CLOCK_MONOTONIC ns)")
    args = parser.parse_args(argv)
    faults = Faults(
        rate_429=args.rate_429,
        retry_after=args.retry_after,
        rate_500=args.rate_500,
        rate_503=args.rate_503,
        rate_slow=args.rate_slow,
        slow_secs=args.slow_secs,
        rate_drop=args.rate_drop,
        rate_malformed=args.rate_malformed,
        seed=args.seed,
    )

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    fake = FakeOpenAI(latency=args.latency, host=args.host, port=args.port, faults=faults)
    if args.stream_words or args.chunk_delay or args.stamp_chunks:
        words = " ".join(f"w{i}" for i in range(args.stream_words)) if args.stream_words else None

        def streamed(body: dict[str, Any]) -> Reply | None:
            if not body.get("stream"):
                return None
            return Reply(content=words, chunk_delay=args.chunk_delay, stamp_chunks=args.stamp_chunks)

        fake.responder = streamed
    fake.start()
    try:
        sys.stdout.write(f"READY {fake.base_url}\n")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
