"""The hotline's call-side effects: handing the live call to the new agent, the welcome text."""

from __future__ import annotations

import time
import uuid

from pydantic import BaseModel
from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError

from activities.heartbeats import heartbeating
from core.callbacks import agent_call_url
from core.ports import CallEnded, Telephony
from core.settings import Settings
from workflows.agent_lifecycle import AgentLifecycleWorkflow
from workflows.agent_lifecycle import workflow_id as lifecycle_id

HANDOFF_TOKEN_TTL_S = 300.0  # Twilio fetches the redirect's TwiML at once


def welcome_text(agent_name: str, dashboard_url: str) -> str:
    return (f"Hi, it's {agent_name}, your DeepClaw assistant. Save this number, and call or text me any time. "
            f"Manage me at {dashboard_url.rstrip('/')}/ (sign in with this phone).")


class Handoff(BaseModel):
    call_sid: str
    user_id: uuid.UUID
    agent_name: str


class Welcome(BaseModel):
    to: str
    sender: str  # the user's new number
    agent_name: str


class HotlineCallActivities:
    def __init__(self, telephony: Telephony, settings: Settings) -> None:
        self.telephony = telephony
        self.settings = settings

    @activity.defn
    async def hand_off_call(self, handoff: Handoff) -> bool:
        """Redirects the hotline call to the user's agent (a Twilio call update) once the agent is awake
        and warm, so its first answer does not wait. False if the caller already hung up: they will
        call their number themselves."""
        await self._agent_awake(handoff.user_id)
        greeting = f"Hi, I'm {handoff.agent_name}, your new assistant. What can I do for you?"
        url = agent_call_url(self.settings, user_id=handoff.user_id, greeting=greeting, direction="inbound",
                             ttl_s=HANDOFF_TOKEN_TTL_S)
        try:
            await self.telephony.redirect_call(handoff.call_sid, url=url)
        except CallEnded:
            activity.logger.info("call %s ended before the hand-off", handoff.call_sid)
            return False
        return True

    async def _agent_awake(self, user_id: uuid.UUID) -> None:
        """Waits for the agent's wake (started as it was provisioned, usually done by now); a failed
        wake is not the hand-off's: the call goes over and the agent is woken again by its first turn."""
        started = time.monotonic()
        try:
            await heartbeating(activity.client().get_workflow_handle(lifecycle_id(user_id)).execute_update(
                AgentLifecycleWorkflow.ensure_awake))
        except (WorkflowUpdateFailedError, RPCError) as error:
            activity.logger.warning("the agent of %s is not awake for the hand-off: %s", user_id, error)
            return
        activity.logger.info("the agent of %s was ready for the hand-off after %.1f s", user_id,
                             time.monotonic() - started)

    @activity.defn
    async def send_welcome(self, welcome: Welcome) -> None:
        await self.telephony.send_sms(to=welcome.to, from_=welcome.sender, body=welcome_text(welcome.agent_name, self.settings.api_base_url))

    def all(self) -> list[object]:
        return [self.hand_off_call, self.send_welcome]
