"""Asking a user's own agent from an activity (a text to answer, a reminder to phrase): woken
through the lifecycle's shared wake, then asked over OpenClaw's chat completions in a session."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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

log = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 600.0  # a long task (a search, code) may take minutes
# While it waits on an answer, the asker holds the agent awake (a paused gateway would freeze the
# answer): a hold of HOLD_S, renewed every HOLD_RENEW_S, lapses soon after the asker is gone.
HOLD_S = 60.0
HOLD_RENEW_S = 20.0


class AgentChat:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession],
                 http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.sessions = sessions  # where the tokens each answer used are recorded
        self.http = http or http_client(httpx.Timeout(ANSWER_TIMEOUT_S, connect=10))

    async def close(self) -> None:
        await self.http.aclose()

    async def ask(self, user_id: uuid.UUID, messages: list[dict[str, Any]], *, session_key: str) -> str:
        """The agent's answer (woken first if need be), heartbeating and holding it awake while it
        thinks; the tokens it used are recorded as the user's usage."""
        async with self._holding(user_id):
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

    @asynccontextmanager
    async def _holding(self, user_id: uuid.UUID) -> AsyncIterator[None]:
        """The agent held awake (AgentLifecycleWorkflow.hold) until the block ends."""
        handle = activity.client().get_workflow_handle(lifecycle_id(user_id))

        async def renew() -> None:
            while True:
                await handle.signal(AgentLifecycleWorkflow.hold, HOLD_S)
                await asyncio.sleep(HOLD_RENEW_S)

        holding = asyncio.create_task(renew())
        try:
            yield
        finally:
            holding.cancel()
            try:
                await handle.signal(AgentLifecycleWorkflow.release)
            except RPCError as error:  # no lifecycle (a removed user): `awake` said so already
                log.info("no hold to release on the agent of %s: %s", user_id, error)
            if holding.done() and not holding.cancelled() and holding.exception():
                log.warning("could not hold the agent of %s awake: %s", user_id, holding.exception())

    async def awake(self, user_id: uuid.UUID) -> AgentEndpoint:
        try:
            return await activity.client().get_workflow_handle(lifecycle_id(user_id)).execute_update(
                AgentLifecycleWorkflow.ensure_awake)
        except WorkflowUpdateFailedError as error:  # removed, or its wake failed: retried by the policy
            raise ApplicationError(f"the agent of {user_id} could not be woken: {error.cause or error}") from None
        except RPCError as error:
            raise ApplicationError(f"the agent of {user_id} is unreachable: {error}") from None
