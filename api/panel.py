"""The agent panel's pages (`agent_assist.panel`): ``/agent`` and ``/agent/supervisor``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from agent_assist.panel import AGENT_PAGE, PAGE_HEADERS, SUPERVISOR_PAGE

router = APIRouter(include_in_schema=False)


@router.get("/agent")
async def agent_desk() -> FileResponse:
    """The agent desk: sign in, the queue, chats with their context and suggested replies."""
    return FileResponse(AGENT_PAGE, media_type="text/html", headers=PAGE_HEADERS)


@router.get("/agent/supervisor")
async def supervisor() -> FileResponse:
    """The supervisor's view: agents and their load, the queue, breaches, today's figures."""
    return FileResponse(SUPERVISOR_PAGE, media_type="text/html", headers=PAGE_HEADERS)
