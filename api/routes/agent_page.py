"""The dashboard's Agent page: the agent's name, voice, personality and the user's own instructions,
their time zone and quiet hours, their PIN and whether other phones may reach the agent.

Saved to the user's row, then given to the agent through its lifecycle workflow's `apply_settings`
(the runtime rewrites its persona, which OpenClaw reads on every turn): effective on the next turn.
The voice and name are read by the voice bridge at each call's start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import time, timedelta
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError

from api.deps import CsrfDep, SessionDep, SettingsDep, SignedInDep, SpeechDep, TemporalDep, UserIdDep
from api.pages import audit, own_user, render
from core.callers import PIN_DIGITS, pin_digest
from core.models import PERSONALITIES, User
from core.ports import AgentSpec, SpeechUnavailable
from core.timezones import valid_zone, zone_of_number, zone_of_user
from workflows.agent_lifecycle import AgentLifecycleWorkflow
from workflows.agent_lifecycle import workflow_id as lifecycle_id
from workflows.onboarding_lines import VOICES

log = logging.getLogger(__name__)
router = APIRouter()

MAX_NAME = 64
MAX_INSTRUCTIONS = 2000
APPLY_TIMEOUT_S = 15.0
NOTICES = {"saved": "Saved. Your agent uses the new settings from its next answer.",
           "saved-later": "Saved, but your agent could not be updated just now: save again in a minute."}


@dataclass
class AgentForm:
    """What the form sent, and what is wrong with it (by field)."""

    agent_name: str
    voice: str
    personality: str
    instructions: str
    time_zone: str
    quiet_from: str
    quiet_until: str
    allow_other_phones: bool
    new_pin: str
    remove_pin: bool
    errors: dict[str, str] = field(default_factory=dict)

    def check(self, user: User) -> None:
        name = " ".join(self.agent_name.split())
        if not name or len(name) > MAX_NAME or not any(c.isalpha() for c in name):
            self.errors["agent_name"] = f"A name of 1 to {MAX_NAME} characters, with at least one letter."
        self.agent_name = name
        if self.voice not in VOICES.values():
            self.errors["voice"] = "Choose one of the voices listed."
        if self.personality not in PERSONALITIES:
            self.errors["personality"] = "Choose casual or formal."
        self.instructions = self.instructions.strip()
        if len(self.instructions) > MAX_INSTRUCTIONS:
            self.errors["instructions"] = f"At most {MAX_INSTRUCTIONS} characters ({len(self.instructions)} now)."
        self.time_zone = self.time_zone.strip()
        if self.time_zone and not valid_zone(self.time_zone):
            self.errors["time_zone"] = "Not a time zone; pick one like America/Chicago, or leave it empty."
        self._check_quiet_hours()
        self.new_pin = self.new_pin.strip()
        if self.new_pin and (not self.new_pin.isdigit() or len(self.new_pin) not in PIN_DIGITS):
            self.errors["new_pin"] = f"A PIN is {PIN_DIGITS.start} to {PIN_DIGITS.stop - 1} digits."
        will_have_pin = bool(self.new_pin) or (bool(user.pin_digest) and not self.remove_pin)
        if self.allow_other_phones and not will_have_pin:
            self.errors["allow_other_phones"] = "Set a PIN first: callers from other phones must say it."

    def _check_quiet_hours(self) -> None:
        start, end = self.quiet_from.strip(), self.quiet_until.strip()
        if not start and not end:
            return
        try:
            if time.fromisoformat(start) == time.fromisoformat(end):
                self.errors["quiet_hours"] = "Quiet hours must start and end at different times."
        except ValueError:
            self.errors["quiet_hours"] = "Give both times (like 21:00 and 08:00), or neither for the default."

    def quiet(self) -> tuple[time | None, time | None]:
        if not self.quiet_from.strip():
            return None, None
        return time.fromisoformat(self.quiet_from.strip()), time.fromisoformat(self.quiet_until.strip())

    @classmethod
    def of(cls, user: User) -> AgentForm:
        return cls(agent_name=user.agent_name, voice=user.voice, personality=user.personality,
                   instructions=user.custom_instructions or "", time_zone=user.time_zone or "",
                   quiet_from=user.quiet_from.strftime("%H:%M") if user.quiet_from else "",
                   quiet_until=user.quiet_until.strftime("%H:%M") if user.quiet_until else "",
                   allow_other_phones=user.allow_other_phones, new_pin="", remove_pin=False)


def agent_spec(user: User) -> AgentSpec:
    """What the agent is given of the user's settings (the platform's own MCP server is added by
    the runtime activities)."""
    return AgentSpec(user_id=user.id, agent_name=user.agent_name, personality=user.personality,
                     instructions=user.custom_instructions or "")


def _form_page(request: Request, settings: SettingsDep, viewer: SignedInDep, user: User, form: AgentForm,
               status: int = 200, notice: str | None = None) -> HTMLResponse:
    voices = [{"model": model, "name": name.capitalize()} for name, model in VOICES.items()]
    return render(request, settings, "agent.html", status, viewer=viewer, csrf=viewer.csrf, active="agent", user=user,
                form=form, voices=voices, personalities=PERSONALITIES, has_pin=bool(user.pin_digest),
                number_zone=zone_of_number(user.phone_e164) or settings.default_time_zone,
                zone=zone_of_user(user, settings.default_time_zone),
                default_quiet=settings.quiet_hours, notice=notice, pin_digits=PIN_DIGITS)


@router.get("/agent", response_class=HTMLResponse)
async def agent_settings(request: Request, settings: SettingsDep, session: SessionDep, viewer: SignedInDep,
                         user_id: UserIdDep, notice: str | None = None) -> Response:
    user = await own_user(session, user_id)
    return _form_page(request, settings, viewer, user, AgentForm.of(user), notice=NOTICES.get(notice or ""))


@router.post("/agent", response_class=HTMLResponse, dependencies=[CsrfDep])
async def save_agent_settings(
        request: Request, settings: SettingsDep, session: SessionDep, temporal: TemporalDep, viewer: SignedInDep,
        user_id: UserIdDep, agent_name: Annotated[str, Form(max_length=200)] = "",
        voice: Annotated[str, Form(max_length=64)] = "", personality: Annotated[str, Form(max_length=16)] = "",
        instructions: Annotated[str, Form(max_length=4000)] = "", time_zone: Annotated[str, Form(max_length=64)] = "",
        quiet_from: Annotated[str, Form(max_length=8)] = "", quiet_until: Annotated[str, Form(max_length=8)] = "",
        allow_other_phones: Annotated[bool, Form()] = False, new_pin: Annotated[str, Form(max_length=16)] = "",
        remove_pin: Annotated[bool, Form()] = False) -> Response:
    user = await own_user(session, user_id)
    form = AgentForm(agent_name, voice, personality, instructions, time_zone, quiet_from, quiet_until,
                     allow_other_phones, new_pin, remove_pin)
    form.check(user)
    if form.errors:
        return _form_page(request, settings, viewer, user, form, 400)
    changed_pin = bool(form.new_pin) or (form.remove_pin and bool(user.pin_digest))
    user.agent_name, user.voice, user.personality = form.agent_name, form.voice, form.personality
    user.custom_instructions = form.instructions or None
    user.time_zone = form.time_zone or None
    user.quiet_from, user.quiet_until = form.quiet()
    user.allow_other_phones = form.allow_other_phones
    if form.new_pin:
        user.pin_digest = pin_digest(settings.keyring, user.phone_e164, form.new_pin)
    elif form.remove_pin:
        user.pin_digest = None
    await session.commit()
    await audit(session, user_id=user_id, action="dashboard.changed_agent_settings", pin_changed=changed_pin)
    applied = await apply_to_agent(temporal, user)
    return RedirectResponse(f"/agent?notice={'saved' if applied else 'saved-later'}", status_code=303)


async def apply_to_agent(temporal: Client | None, user: User) -> bool:
    """Whether the running agent has the new settings now (else its workflow gets them on its next
    apply; the row is the truth either way)."""
    if temporal is None:
        return False
    handle = temporal.get_workflow_handle(lifecycle_id(user.id))
    try:
        await handle.execute_update(AgentLifecycleWorkflow.apply_settings, agent_spec(user),
                                    rpc_timeout=timedelta(seconds=APPLY_TIMEOUT_S))
    except (RPCError, WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError) as error:
        # Timed out: the update is admitted and carries on in the workflow; the page says "later".
        log.warning("settings of %s not applied to the agent yet: %s", user.id, error)
        return False
    return True


SAMPLE_TEXT = "Hi, I'm {name}, your DeepClaw assistant. What can I do for you?"
_samples: dict[tuple[str, str], bytes] = {}  # (voice, name) -> WAV: a sample is made once per process
MAX_SAMPLES = 200


@router.get("/agent/voices/{voice}/sample")
async def voice_sample(voice: str, speech: SpeechDep, session: SessionDep, user_id: UserIdDep) -> Response:
    """A short sample of one of the supported voices, saying the agent's own name."""
    if voice not in VOICES.values():
        raise HTTPException(status_code=404, detail="No such voice.")
    name = (await own_user(session, user_id)).agent_name
    key = (voice, name)
    if key not in _samples:
        try:
            _samples[key] = await speech.speak(SAMPLE_TEXT.format(name=name), voice=voice)
        except SpeechUnavailable as error:
            log.warning("no sample of %s: %s", voice, error)
            raise HTTPException(status_code=503, detail="Voice samples are unavailable right now.") from None
        if len(_samples) > MAX_SAMPLES:
            _samples.pop(next(iter(_samples)))
    return Response(_samples[key], media_type="audio/wav", headers={"Cache-Control": "private, max-age=86400"})

