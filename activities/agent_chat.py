"""Asking a user's own agent from an activity (a text to answer, a reminder to phrase): woken
through the lifecycle's shared wake, then asked over OpenClaw's chat completions in a session."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from activities.heartbeats import heartbeating
from activities.runtime.openclaw_config import agent_id
from core.http import client as http_client
from core.ports import AgentEndpoint
from core.settings import Settings
from core.usage import record_model_tokens
from workflows.agent_lifecycle import AgentLifecycleWorkflow
from workflows.agent_lifecycle import workflow_id as lifecycle_id

ANSWER_TIMEOUT_S = 600.0  # a long task (a search, code) may take minutes


class AgentChat:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession],
                 http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.sessions = sessions  # where the tokens each answer used are recorded
        self.http = http or http_client(httpx.Timeout(ANSWER_TIMEOUT_S, connect=10))

    async def close(self) -> None:
        await self.http.aclose()

    async def ask(self, user_id: uuid.UUID, messages: list[dict[str, Any]], *, session_key: str) -> str:
        """The agent's answer (woken first if need be), heartbeating while it thinks; the tokens it
        used are recorded as the user's usage."""
        endpoint = await heartbeating(self.awake(user_id))
        response = await heartbeating(self.http.post(
            f"{endpoint.base_url}/v1/chat/completions",
            json={"model": f"openclaw/{agent_id(user_id)}", "messages": messages},
            headers={**endpoint.authorization(self.settings.keyring), "x-openclaw-session-key": session_key}))
        response.raise_for_status()
        completion = response.json()
        if completion.get("id"):
            async with self.sessions() as session, session.begin():
                await record_model_tokens(session, user_id=user_id, usage=completion.get("usage"), run=completion["id"])
        return (completion["choices"][0]["message"].get("content") or "").strip()

    async def awake(self, user_id: uuid.UUID) -> AgentEndpoint:
        try:
            return await activity.client().get_workflow_handle(lifecycle_id(user_id)).execute_update(
                AgentLifecycleWorkflow.ensure_awake)
        except WorkflowUpdateFailedError as error:  # removed, or its wake failed: retried by the policy
            raise ApplicationError(f"the agent of {user_id} could not be woken: {error.cause or error}") from None
        except RPCError as error:
            raise ApplicationError(f"the agent of {user_id} is unreachable: {error}") from None
