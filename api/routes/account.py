"""The dashboard's Account page: export everything the platform holds about me (its rows as JSON,
and the agent's memory files, copied out by the worker that runs it), and delete my
account (a durable DeleteUserWorkflow: the agent and its data everywhere, the number kept out of use
for DEEPCLAW_NUMBER_RELEASE_AFTER_DAYS, then back to the pool)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import tarfile
import tempfile
import uuid
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api.deps import (
    ArchiveDep,
    CsrfDep,
    LimiterDep,
    MailerDep,
    SessionDep,
    SessionsDep,
    SettingsDep,
    SignedInDep,
    TelephonyDep,
    TemporalDep,
    UserIdDep,
)
from api.pages import audit, client_address, own_user, render
from api.sign_in import SESSION_COOKIE, AddressKind, CodeSender, account_of, change_of_address, parse_address, redeem
from core.models import (
    AuditEvent,
    BillingStatement,
    Conversation,
    Delivery,
    McpServer,
    OAuthCredential,
    PendingAction,
    Message,
    PhoneNumber,
    Reminder,
    UsageRecord,
    User,
    WebSession,
    utcnow,
)
from core.ports import ArchiveStore
from core.settings import Settings
from workflows.delete_user import DeleteUserInput, DeleteUserWorkflow
from workflows.delete_user import workflow_id as delete_workflow_id
from workflows.export_memory import ExportMemoryInput, ExportMemoryWorkflow
from workflows.export_memory import workflow_id as export_memory_id

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
        "statements.json": _rows((await session.execute(select(BillingStatement).where(
            BillingStatement.user_id == user_id).order_by(BillingStatement.month))).scalars().all()),  # type: ignore[arg-type]
        # Where they are signed in (the secret's digest is not theirs to need, nor anyone's to read).
        "sessions.json": _rows((await session.execute(select(WebSession).where(WebSession.user_id == user_id)
                                                      .order_by(WebSession.created_at))).scalars().all(),  # type: ignore[arg-type]
                               {"secret_digest"}),
        "activity.json": _rows((await session.execute(select(AuditEvent).where(AuditEvent.user_id == user_id)
                                                      .order_by(AuditEvent.created_at))).scalars().all()),  # type: ignore[arg-type]
        # What is connected, without the sealed tokens and header values (never shown, even to their owner).
        "integrations.json": {
            "connections": _rows((await session.execute(select(OAuthCredential).where(
                OAuthCredential.user_id == user_id))).scalars().all(), {"ciphertext"}),
            "mcp_servers": [row | {"has_headers": row.pop("headers_ciphertext") is not None} for row in _rows(
                (await session.execute(select(McpServer).where(McpServer.user_id == user_id)
                                       .order_by(McpServer.created_at))).scalars().all())],  # type: ignore[arg-type]
            "confirmations": _rows((await session.execute(select(PendingAction).where(
                PendingAction.user_id == user_id).order_by(PendingAction.created_at))).scalars().all()),  # type: ignore[arg-type]
        },
    }


CHANGES = {"email": AddressKind.EMAIL, "phone": AddressKind.PHONE}
NOTICES = {"email": "Your email is verified and changed.", "phone": "Your phone number is verified and changed."}


def _account_page(request: Request, settings: SettingsDep, viewer: SignedInDep, user: User, status: int = 200,
                  **context: Any) -> HTMLResponse:
    return render(request, settings, "account.html", status, viewer=viewer, csrf=viewer.csrf, active="account",
                  user=user, confirmation=CONFIRMATION, quarantine_days=settings.number_release_after_days, **context)


@router.get("/account", response_class=HTMLResponse)
async def account(request: Request, settings: SettingsDep, session: SessionDep, viewer: SignedInDep,
                  user_id: UserIdDep, notice: str | None = None) -> Response:
    return _account_page(request, settings, viewer, await own_user(session, user_id),
                         notice=NOTICES.get(notice or ""))


MEMORY_EXPORT_TIMEOUT = timedelta(seconds=30)  # then the export comes without them, saying why
MEMORY_MAX_BYTES = 50 * 1024 * 1024  # an export is built in memory: a runaway workspace is cut off
MEMORY_FOLDER = "agent/workspace/"
NO_MEMORY = "Your agent's memory files could not be included this time ({why}); export again later for them.\n"


def _workspace_files(bundle: Path, prefix: str) -> dict[str, bytes]:
    """The regular files under `prefix` in a tar.gz made by a runtime, by their path below it."""
    files: dict[str, bytes] = {}
    total = 0
    with tarfile.open(bundle) as archive:
        for member in archive:
            name = member.name.removeprefix("./")
            if not member.isfile() or not name.startswith(prefix) or ".." in name.split("/"):
                continue
            total += member.size
            if total > MEMORY_MAX_BYTES:
                raise ValueError(f"the workspace is larger than {MEMORY_MAX_BYTES} bytes")
            files[name.removeprefix(prefix)] = archive.extractfile(member).read()  # type: ignore[union-attr]
    return files


async def memory_files(temporal: Client | None, settings: Settings, store: ArchiveStore,
                       user_id: uuid.UUID) -> tuple[dict[str, bytes], str | None]:
    """The agent's memory files (its workspace), copied out by the worker that runs it; or none
    and why."""
    if temporal is None:
        return {}, NO_MEMORY.format(why="the platform could not reach your agent")
    try:
        found = await temporal.execute_workflow(
            ExportMemoryWorkflow.run, ExportMemoryInput(user_id=user_id), id=export_memory_id(user_id),
            task_queue=settings.temporal_task_queue, execution_timeout=MEMORY_EXPORT_TIMEOUT)
    except (WorkflowFailureError, RPCError) as error:
        log.warning("memory files of %s not exported: %s", user_id, error)
        return {}, NO_MEMORY.format(why="your agent did not answer in time")
    if found.key is None:
        return {}, "Your agent has no memory files yet.\n"
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "memory.tar.gz"
        try:
            await store.get(found.key, bundle)
        except FileNotFoundError:  # two exports at once share the copy's key: the other one took it
            return {}, NO_MEMORY.format(why="another export of yours was being made at the same time")
        if not found.whole_state:
            await store.delete(found.key)  # the export's own copy, not the archive
        try:
            return await asyncio.to_thread(_workspace_files, bundle, "workspace/" if found.whole_state else ""), None
        except ValueError as error:
            return {}, NO_MEMORY.format(why=str(error))


@router.get("/account/export")
async def export(settings: SettingsDep, session: SessionDep, temporal: TemporalDep, store: ArchiveDep,
                 user_id: UserIdDep) -> Response:
    data = await export_data(session, user_id)
    memory, missing = await memory_files(temporal, settings, store, user_id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, content in data.items():
            bundle.writestr(name, json.dumps(content, indent=2, ensure_ascii=False))
        for path, body in sorted(memory.items()):
            bundle.writestr(MEMORY_FOLDER + path, body)
        if missing:
            bundle.writestr(MEMORY_FOLDER + "NOT-INCLUDED.txt", missing)
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
        return _account_page(request, settings, viewer, user, status, error=error)

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


# ---- a new email or phone, verified like sign-up (after /account/delete: these match any name) ----


@router.post("/account/{what}", response_class=HTMLResponse, dependencies=[CsrfDep])
async def change_address(request: Request, what: str, settings: SettingsDep, session: SessionDep,
                         sessions: SessionsDep, telephony: TelephonyDep, mailer: MailerDep, limiter: LimiterDep,
                         viewer: SignedInDep, user_id: UserIdDep,
                         address: Annotated[str, Form(max_length=400)] = "") -> Response:
    """Sends a code to the new email or phone; the change happens once it is entered."""
    if what not in CHANGES:
        raise HTTPException(status_code=404)
    user = await own_user(session, user_id)
    try:
        parsed = parse_address(address)
        if parsed.kind != CHANGES[what]:
            raise ValueError(f"That is not {'an email address' if what == 'email' else 'a phone number'}.")
        if parsed.value in ((user.email or "").lower(), user.phone_e164):
            raise ValueError(f"That is already your {what}.")
    except ValueError as error:
        return _account_page(request, settings, viewer, user, 400, change=what, change_error=str(error),
                             change_address=address)
    refusal = await CodeSender(settings, sessions, telephony, mailer, limiter).request(
        parsed, client_address(request), purpose=change_of_address(user_id))
    if refusal:
        return _account_page(request, settings, viewer, user, 429, change=what, change_address=address,
                             change_error=f"Too many codes asked for. Try again after {refusal.retry_at:%H:%M} UTC.")
    return render(request, settings, "account_verify.html", viewer=viewer, csrf=viewer.csrf, active="account",
                  what=what, address=parsed.value, shown=parsed.shown)


@router.post("/account/{what}/verify", response_class=HTMLResponse, dependencies=[CsrfDep])
async def verify_address(request: Request, what: str, settings: SettingsDep, session: SessionDep,
                         sessions: SessionsDep, viewer: SignedInDep, user_id: UserIdDep,
                         address: Annotated[str, Form(max_length=400)] = "",
                         code: Annotated[str, Form(max_length=20)] = "") -> Response:
    if what not in CHANGES:
        raise HTTPException(status_code=404)
    try:
        parsed = parse_address(address)
    except ValueError:
        return RedirectResponse("/account", status_code=303)
    if parsed.kind != CHANGES[what] or not await redeem(settings, sessions, parsed, code,
                                                        purpose=change_of_address(user_id)):
        return render(request, settings, "account_verify.html", 400, viewer=viewer, csrf=viewer.csrf,
                      active="account", what=what, address=parsed.value, shown=parsed.shown,
                      error="That code is wrong, used or expired. Check it, or ask for a new one.")
    taken = await account_of(session, parsed)
    conflict = taken is not None and taken != user_id
    if not conflict:
        user = await own_user(session, user_id)
        if what == "email":
            user.email, user.email_verified = parsed.value, True
        else:
            user.phone_e164, user.phone_verified = parsed.value, True
        try:
            await session.commit()
        except IntegrityError:  # taken at the same moment by someone else
            await session.rollback()
            conflict = True
    if conflict:
        return _account_page(request, settings, viewer, await own_user(session, user_id), 409, change=what,
                             change_address=parsed.value,
                             change_error=f"That {what} belongs to another DeepClaw account.")
    await audit(session, user_id=user_id, action=f"dashboard.changed_{what}")
    return RedirectResponse(f"/account?notice={what}", status_code=303)
