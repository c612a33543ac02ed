"""Tool calls waiting for a human decision inside TaskWorkflow.

A decision arrives as the `decide_approval` update (sent by POST /tasks/{id}/approvals/{id},
api/routes/approvals.py); its validator turns away anything but approve/reject, an id already
decided and an id no call is waiting on, before the update reaches history."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from durable_orchestrator.temporal.contracts import ApprovalDecision


class Approvals:
    def __init__(self) -> None:
        self._awaiting: set[str] = set()
        self._decisions: dict[str, ApprovalDecision] = {}

    def validate(self, decision: ApprovalDecision) -> None:
        if decision.decision not in ("approve", "reject"):
            raise ApplicationError(
                f"decision must be 'approve' or 'reject', not {decision.decision!r}",
                type="InvalidDecision",
            )
        if decision.approval_id in self._decisions:
            raise ApplicationError(
                f"approval {decision.approval_id} was already decided", type="ApprovalAlreadyDecided"
            )
        if decision.approval_id not in self._awaiting:
            raise ApplicationError(
                f"approval {decision.approval_id} is not pending", type="ApprovalNotFound"
            )

    def record(self, decision: ApprovalDecision) -> None:
        self._decisions[decision.approval_id] = decision

    async def wait(self, approval_id: str, timeout_secs: float) -> ApprovalDecision:
        """The decision on `approval_id`; an undecided call counts as decided "timeout"."""
        self._awaiting.add(approval_id)
        try:
            await workflow.wait_condition(
                lambda: approval_id in self._decisions, timeout=timedelta(seconds=timeout_secs)
            )
        except TimeoutError:
            self._decisions[approval_id] = ApprovalDecision(
                approval_id=approval_id, decision="timeout",
                comment=f"no decision within {timeout_secs:g}s",
            )
        finally:
            self._awaiting.discard(approval_id)
        return self._decisions[approval_id]
