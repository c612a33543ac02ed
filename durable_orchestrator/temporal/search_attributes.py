"""Custom search attributes shown in the Temporal Web UI and queryable from the CLI:

    temporal workflow list --query 'UserId="alice" AND TaskStatus="running"'

Imports only temporalio, so workflow code can use it. The dev server started by
`orchestrator up` registers them (devstack/temporal_server.py); on a real cluster run once per namespace:

    temporal operator search-attribute create --namespace default --name UserId --type Keyword
    temporal operator search-attribute create --namespace default --name TaskStatus --type Keyword

or set ORCH_SEARCH_ATTRIBUTES=false."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

USER_ID = SearchAttributeKey.for_keyword("UserId")
TASK_STATUS = SearchAttributeKey.for_keyword("TaskStatus")


def initial(user_id: str, status: str = "pending") -> TypedSearchAttributes:
    return TypedSearchAttributes([SearchAttributePair(USER_ID, user_id), SearchAttributePair(TASK_STATUS, status)])
