"""What the platform MCP server's tools act with (api/routes/mcp.py): the user whose agent's token
the request carries, the API's parts, and checks every tool shares."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from mcp.server.mcpserver.exceptions import ToolError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.deps import Platform
from core.models import PhoneNumber, User

MAX_TEXT = 480
OPTED_OUT = ("not sent: your user opted out of texts and calls from you (they texted STOP); "
             "they can text START to your number to opt back in")
SCHEDULER_DOWN = "the platform's scheduler is unreachable right now; nothing was done, try again in a minute"


@dataclass
class Tools:
    user_id: uuid.UUID
    platform: Platform

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self.platform.sessions

    def temporal(self) -> Client:
        if self.platform.temporal.client is None:
            raise ToolError(SCHEDULER_DOWN)
        return self.platform.temporal.client

    async def user(self) -> User:
        async with self.sessions() as session:
            user = await session.get(User, self.user_id)
        if user is None:
            raise ToolError("your user's account is gone")
        return user

    async def line(self) -> tuple[User, str]:
        """The user and their number, if the platform may text or call them."""
        async with self.sessions() as session:
            row = (await session.execute(select(User, PhoneNumber.e164).join(PhoneNumber, PhoneNumber.user_id == User.id)
                                         .where(User.id == self.user_id, PhoneNumber.state == "assigned"))).one_or_none()
        if row is None:
            raise ToolError("you have no phone number yet")
        if row[0].sms_opted_out_at is not None:
            raise ToolError(OPTED_OUT)
        return row[0], row[1]


def text_arg(value: str | None, key: str) -> str:
    if value is None or not value.strip():
        raise ToolError(f"'{key}' is required: a short text")
    if len(value) > MAX_TEXT:
        raise ToolError(f"'{key}' is too long ({len(value)} characters; at most {MAX_TEXT})")
    return " ".join(value.split())
