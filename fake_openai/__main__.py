"""`python -m fake_openai --port 0`: the fake server as a subprocess (benchmarks, fault tests)."""

import sys

from fake_openai.server import main

sys.exit(main())
