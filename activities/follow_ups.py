"""A call that ended before the user heard the agent's answer (workflows/follow_up.py): the agent
finishes the task in the call's own session, so it has the whole conversation."""

from __future__ import annotations

import uuid

from pydantic import BaseModel
from temporalio import activity

from activities.agent_chat import AgentChat
from core.texts import follow_up_prompt


class UnheardAnswer(BaseModel):
    user_id: uuid.UUID
    call_sid: str
    session_key: str  # the call's OpenClaw session
    question: str  # the user's last words on the call
    answer: str | None = None  # the agent's whole answer, if it finished after the call ended


class FollowUpActivities:
    def __init__(self, agent: AgentChat) -> None:
        self.agent = agent

    @activity.defn
    async def finish_task(self, unheard: UnheardAnswer) -> str:
        return await self.agent.ask(unheard.user_id, [{"role": "user", "content": follow_up_prompt(unheard.question)}],
                                    session_key=unheard.session_key)

    def all(self) -> list[object]:
        return [self.finish_task]
