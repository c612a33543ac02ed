"""The prompt-injection policy: what a tool may do once the conversation holds both untrusted
content and the user's private data.

Tools declare capabilities. Content carries labels: a result of a tool that reads private data
is "private", a result of a tool that brings content in from outside is "untrusted", and
whatever the model writes after reading labelled content (its later tool arguments, notes,
the step's output) carries the same labels. A fetched page can then steer the model, and the
model can hold the user's memories: a tool that sends data out would let the page send the
memories wherever it likes. So once both labels are in the conversation, a send-out call waits
for a human (ORCH_INJECTION_POLICY=approve) or is refused (=refuse). The labels follow the
data through short-term memory into other steps, and into long-term memory (a memory made from
a task that read untrusted content is marked, and reading it back brings "untrusted" in).
"""

from __future__ import annotations

from collections.abc import Iterable

from durable_orchestrator.tools.registry import Tool

# What a tool does (Tool.capabilities).
READS_PRIVATE = "reads_private"
BRINGS_UNTRUSTED = "brings_untrusted"
SENDS_OUT = "sends_out"

# What content carries.
PRIVATE = "private"
UNTRUSTED = "untrusted"
DANGEROUS = frozenset({PRIVATE, UNTRUSTED})

POLICY_SETTING = "ORCH_INJECTION_POLICY"


def labels_of(values: Iterable[str]) -> list[str]:
    """Sorted and without duplicates, as stored."""
    return sorted(set(values))


def result_labels(tool: Tool, found: Iterable[str] = ()) -> list[str]:
    """What a successful call of `tool` brings into the conversation."""
    labels = set(found)
    if READS_PRIVATE in tool.capabilities:
        labels.add(PRIVATE)
    if BRINGS_UNTRUSTED in tool.capabilities:
        labels.add(UNTRUSTED)
    return labels_of(labels)


def held_back(tool: Tool, context: Iterable[str]) -> str | None:
    """Why a call of `tool` must not run without a human, or None. Tools that always need
    approval are left to that."""
    if SENDS_OUT not in tool.capabilities or tool.requires_approval:
        return None
    if not DANGEROUS <= set(context):
        return None
    return (
        f"{tool.name!r} sends data out, and this conversation holds both untrusted content "
        "(fetched from outside) and private data (the user's memories)"
    )
