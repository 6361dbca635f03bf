"""The dashboard's Account page: export everything the platform holds about me, and delete my
account (a durable DeleteUserWorkflow: the agent and its data everywhere, the number kept out of use
for DEEPCLAW_NUMBER_RELEASE_AFTER_DAYS, then back to the pool)."""

from __future__ import annotations

import io
import json
import logging
import uuid
import zipfile
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlmodel import SQLModel
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api.deps import CsrfDep, SessionDep, SettingsDep, SignedInDep, TemporalDep, UserIdDep
from api.routes.dashboard import audit, own_user, render
from api.sign_in import SESSION_COOKIE
from core.models import AuditEvent, Conversation, Delivery, Message, PhoneNumber, Reminder, UsageRecord, utcnow
from workflows.delete_user import DeleteUserInput, DeleteUserWorkflow
from workflows.delete_user import workflow_id as delete_workflow_id

log = logging.getLogger(__name__)
router = APIRouter()

CONFIRMATION = "delete"
# What an export leaves out of the user's row: digests and internal counters, never theirs to read.
PRIVATE_COLUMNS = {"pin_digest", "mcp_token_generation"}


def _rows(rows: Any, drop: set[str] = frozenset()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    return [{k: v for k, v in SQLModel.model_dump(row, mode="json").items() if k not in drop} for row in rows]


async def export_data(session: SessionDep, user_id: uuid.UUID) -> dict[str, Any]:
    """Everything the database holds about the user, as JSON-ready lists."""
    user = await own_user(session, user_id)
    conversations = (await session.execute(select(Conversation).where(Conversation.user_id == user_id)
                                           .order_by(Conversation.started_at))).scalars().all()  # type: ignore[arg-type]
    messages = (await session.execute(select(Message).join(Conversation, Conversation.id == Message.conversation_id)
                                      .where(Conversation.user_id == user_id)
                                      .order_by(Message.created_at))).scalars().all()  # type: ignore[arg-type]
    by_conversation: dict[str, list[dict[str, Any]]] = {}
    for message in _rows(messages):
        by_conversation.setdefault(message["conversation_id"], []).append(message)
    return {
        "account.json": _rows([user], PRIVATE_COLUMNS)[0] | {"has_pin": bool(user.pin_digest)},
        "number.json": _rows((await session.execute(select(PhoneNumber).where(PhoneNumber.user_id == user_id)))
                             .scalars().all()),
        "conversations.json": [c | {"messages": by_conversation.get(c["id"], [])} for c in _rows(conversations)],
        "reminders.json": _rows((await session.execute(select(Reminder).where(Reminder.user_id == user_id)
                                                       .order_by(Reminder.created_at))).scalars().all()),  # type: ignore[arg-type]
        "deliveries.json": _rows((await session.execute(select(Delivery).where(Delivery.user_id == user_id)
                                                        .order_by(Delivery.created_at))).scalars().all()),  # type: ignore[arg-type]
        "usage.json": _rows((await session.execute(select(UsageRecord).where(UsageRecord.user_id == user_id)
                                                   .order_by(UsageRecord.occurred_at))).scalars().all()),  # type: ignore[arg-type]
        "activity.json": _rows((await session.execute(select(AuditEvent).where(AuditEvent.user_id == user_id)
                                                      .order_by(AuditEvent.created_at))).scalars().all()),  # type: ignore[arg-type]
    }


@router.get("/account", response_class=HTMLResponse)
async def account(request: Request, settings: SettingsDep, session: SessionDep, viewer: SignedInDep,
                  user_id: UserIdDep) -> Response:
    user = await own_user(session, user_id)
    return render(request, settings, "account.html", viewer=viewer, csrf=viewer.csrf, active="account", user=user,
                  confirmation=CONFIRMATION, quarantine_days=settings.number_release_after_days)


@router.get("/account/export")
async def export(session: SessionDep, user_id: UserIdDep) -> Response:
    data = await export_data(session, user_id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, content in data.items():
            bundle.writestr(name, json.dumps(content, indent=2, ensure_ascii=False))
    await audit(session, user_id=user_id, action="dashboard.exported_data")
    filename = f"deepclaw-export-{utcnow():%Y-%m-%d}.zip"
    return Response(buffer.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


@router.post("/account/delete", response_class=HTMLResponse, dependencies=[CsrfDep])
async def delete_account(request: Request, settings: SettingsDep, session: SessionDep, temporal: TemporalDep,
                         viewer: SignedInDep, user_id: UserIdDep,
                         confirm: Annotated[str, Form(max_length=40)] = "") -> Response:
    user = await own_user(session, user_id)

    def again(error: str, status: int) -> HTMLResponse:
        return render(request, settings, "account.html", status, viewer=viewer, csrf=viewer.csrf, active="account",
                      user=user, confirmation=CONFIRMATION, quarantine_days=settings.number_release_after_days,
                      error=error)

    if confirm.strip().lower() != CONFIRMATION:
        return again(f"Type {CONFIRMATION} to confirm; nothing was deleted.", 400)
    if temporal is None:
        return again("The platform cannot take this request right now; nothing was deleted. Try again in a minute.",
                     503)
    try:
        await temporal.start_workflow(
            DeleteUserWorkflow.run, DeleteUserInput(user_id=user_id, requested_by="user",
                                                    quarantine_days=settings.number_release_after_days),
            id=delete_workflow_id(user_id), task_queue=settings.temporal_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE)
    except WorkflowAlreadyStartedError:
        log.info("deletion of %s already under way", user_id)
    except RPCError as error:
        log.error("deletion of %s not started: %s", user_id, error)
        return again("The platform cannot take this request right now; nothing was deleted. Try again in a minute.",
                     503)
    await audit(session, user_id=user_id, action="dashboard.deletion_requested")
    response = RedirectResponse("/signin?notice=deleted", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
