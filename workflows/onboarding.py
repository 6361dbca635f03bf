"""OnboardingWorkflow (`onboarding-<HMAC of the caller's E.164>`): the setup hotline's dialog, one step at a time.

Each thing the caller says (or keys in) arrives as the `hear` Update and is answered with the next
line; `call_started` opens every call, so a caller who hung up resumes at the same step for 24 h.
Verified phone, verified email, voice, personality and name lead to the ProvisionUserWorkflow
child; once the caller has heard their new number, the live call is handed to their new agent
and the number texts them a welcome. Codes never appear in history: only their HMACs do.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.onboarding.calls import Handoff, HotlineCallActivities, Welcome
    from activities.onboarding.verification import Channel, CodeGuess, CodeRequest, VerificationActivities
    from activities.users import NewUser
    from core import spoken
    from core.temporal import USER_ID, USER_PHONE
    from core.tokens import Keyring, TokenKind
    from workflows import onboarding_lines as lines
    from workflows.agent_lifecycle import Thresholds
    from workflows.number_pool import WORKFLOW_ID as POOL_ID
    from workflows.provision_user import ProvisionInput, ProvisionUserWorkflow
    from workflows.provision_user import workflow_id as provision_id


class Step(StrEnum):
    PHONE_CODE = "verify phone"
    EMAIL = "ask email"
    EMAIL_CONFIRM = "confirm email"
    EMAIL_CODE = "verify email"
    VOICE = "choose voice"
    PERSONALITY = "choose personality"
    NAME = "name agent"
    PIN = "choose PIN"
    PROVISIONING = "provisioning"
    HANDOFF = "handing off"
    DONE = "done"
    LOCKED_OUT = "locked out"  # too many codes: the session ends without resuming
    EXPIRED = "expired"


FINISHED = (Step.DONE, Step.EXPIRED)


class OnboardingPolicy(BaseModel):
    code_ttl: timedelta = timedelta(minutes=10)
    code_attempts: int = 3
    codes_per_channel: int = 5
    resume_for: timedelta = timedelta(hours=24)
    # The hand-off waits for the bridge's word that the "All set" line has played; without it, for
    # twice the line's length at this rate, plus the grace.
    words_per_second: float = 2.5
    handoff_grace: timedelta = timedelta(seconds=5)


class ReturningUser(BaseModel):
    """A caller who was a user before and has no number now (it was released after a long archive):
    they keep their user id, history and choices, and only prove their phone again."""

    user_id: uuid.UUID
    email: str
    voice: str  # the voice model, e.g. aura-2-luna-en
    personality: str
    agent_name: str


class OnboardingInput(BaseModel):
    caller: str
    hotline_number: str
    returning: ReturningUser | None = None
    runtime: str = "local"
    pool_workflow_id: str = POOL_ID
    policy: OnboardingPolicy = OnboardingPolicy()
    thresholds: Thresholds = Thresholds()  # for the new agent's lifecycle
    archived_numbers: str = "pool"


class CallStarted(BaseModel):
    call_sid: str


class Heard(BaseModel):
    call_sid: str
    text: str
    # At the PIN step the conductor sends only this keyed digest of the digits (never the PIN itself:
    # an Update's input is kept in history).
    pin_digest: str | None = None


class Line(BaseModel):
    text: str
    end_call: bool = False
    hand_off: bool = False  # the call goes to the new agent once this line has played


class OnboardingResult(BaseModel):
    step: Step
    user_id: uuid.UUID | None = None
    number: str | None = None


class PendingCode(BaseModel):
    channel: Channel
    digest: str
    sent_at: datetime
    wrong: int = 0


def workflow_id(keyring: Keyring, caller: str) -> str:
    """`onboarding-<HMAC of the caller's number>`: the same for every call from that number (so a
    call resumes the onboarding), yet the number is not readable in Temporal (UserPhone is, for search).
    Made with the current platform secret: after a rotation an onboarding in progress starts afresh."""
    return f"onboarding-{keyring.digest(TokenKind.WORKFLOW_ID, caller)[:26]}"


def area_code(e164: str) -> str | None:
    return e164[2:5] if e164.startswith("+1") and len(e164) == 12 else None


SEND = dict(start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3, maximum_interval=timedelta(seconds=5)))
# The hand-off first waits for the new agent to be awake (a cold start when no spare is warm).
HAND_OFF = dict(start_to_close_timeout=timedelta(minutes=3), heartbeat_timeout=timedelta(seconds=20),
                retry_policy=RetryPolicy(maximum_attempts=3, maximum_interval=timedelta(seconds=5)))


@workflow.defn
class OnboardingWorkflow:
    @workflow.init
    def __init__(self, input: OnboardingInput) -> None:
        self.input = input
        self.policy = input.policy
        self.step = Step.PHONE_CODE
        self.code: PendingCode | None = None
        self.codes_sent: dict[Channel, int] = {Channel.SMS: 0, Channel.EMAIL: 0}
        self.email = ""
        self.voice = ""
        self.personality = ""
        self.agent_name = lines.DEFAULT_AGENT_NAME
        self.pin_digest: str | None = None
        self.user_id: uuid.UUID | None = None
        self.number: str | None = None
        self.call_sid = ""
        self.caller_active = False
        self.handoff_due = False
        self.handoff_words = 0  # the last line before the hand-off, which it waits for
        self.handoff_line_played = False
        self.lock = asyncio.Lock()  # one utterance at a time, in order

    # ---- handlers -------------------------------------------------------------------------

    @workflow.query
    def current_step(self) -> Step:
        return self.step

    @workflow.signal
    def line_played(self) -> None:
        """The hand-off line has played to the caller (the voice bridge heard Twilio's mark)."""
        self.handoff_line_played = True

    @workflow.update
    async def call_started(self, call: CallStarted) -> Line:
        """A hotline call began: the opening line (welcome, or welcome back and where we were)."""
        async with self.lock:
            self._heard_from(call.call_sid)
            if self.step == Step.PHONE_CODE and self.code is None and self.codes_sent[Channel.SMS] == 0:
                return await self._send_code(Channel.SMS, lines.WELCOME)
            return await self._resume()

    @workflow.update
    async def hear(self, heard: Heard) -> Line:
        """The caller's words (or keyed digits); answers with what the hotline says next."""
        async with self.lock:
            self._heard_from(heard.call_sid)
            steps: dict[Step, Callable[[str], Awaitable[Line]]] = {
                Step.PHONE_CODE: self._on_phone_code, Step.EMAIL: self._on_email,
                Step.EMAIL_CONFIRM: self._on_email_confirmation, Step.EMAIL_CODE: self._on_email_code,
                Step.VOICE: self._on_voice, Step.PERSONALITY: self._on_personality, Step.NAME: self._on_name,
            }
            if self.step == Step.PIN:
                return await self._on_pin(heard)
            if self.step in steps:
                return await steps[self.step](heard.text.strip())
            return await self._resume()

    @call_started.validator
    def _accepting_calls(self, call: CallStarted) -> None:
        if self.step in FINISHED:
            raise ApplicationError("this onboarding has finished", type="OnboardingFinished")

    @hear.validator
    def _accepting_words(self, heard: Heard) -> None:
        if self.step in FINISHED:
            raise ApplicationError("this onboarding has finished", type="OnboardingFinished")

    def _heard_from(self, call_sid: str) -> None:
        self.call_sid = call_sid or self.call_sid
        if self.step != Step.LOCKED_OUT:  # calling again does not lift a lock-out
            self.caller_active = True

    # ---- main loop ------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: OnboardingInput) -> OnboardingResult:
        workflow.upsert_search_attributes([USER_PHONE.value_set(input.caller)])
        while self.step not in FINISHED:
            self._show()
            try:
                await workflow.wait_condition(lambda: self.caller_active or self.handoff_due,
                                              timeout=self.policy.resume_for)
            except TimeoutError:
                workflow.logger.info("onboarding of %s expired at step %s", input.caller, self.step)
                self.step = Step.EXPIRED
                break
            self.caller_active = False
            if self.handoff_due:
                await self._hand_off()
        self._show()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return OnboardingResult(step=self.step, user_id=self.user_id, number=self.number)

    def _show(self) -> None:
        """What operators see for this caller in Temporal UI."""
        workflow.set_current_details(f"**{self.step.value}**" + (f" — agent number {self.number}" if self.number else ""))

    # ---- the steps ------------------------------------------------------------------------

    async def _resume(self) -> Line:
        back = lines.WELCOME_BACK
        if self.step == Step.PHONE_CODE:
            return await self._ask_code_again(Channel.SMS, back)
        if self.step == Step.EMAIL_CODE:
            return await self._ask_code_again(Channel.EMAIL, back)
        if self.step == Step.PROVISIONING:
            return await self._provision()
        if self.step == Step.LOCKED_OUT:
            return Line(text=lines.TOO_MANY_CODES, end_call=True)
        if self.step == Step.HANDOFF and self.number:
            return Line(text=lines.already_registered(self.number), end_call=True)
        prompts = {Step.EMAIL: lines.ASK_EMAIL, Step.EMAIL_CONFIRM: lines.confirm_email(self.email),
                   Step.VOICE: lines.ASK_VOICE, Step.PERSONALITY: lines.ASK_PERSONALITY, Step.NAME: lines.ASK_NAME,
                   Step.PIN: lines.ASK_PIN}
        return Line(text=back + prompts[self.step])

    async def _ask_code_again(self, channel: Channel, prefix: str) -> Line:
        """On a new call: the pending code if still usable, else a fresh one."""
        if self.code is not None and not self._expired(self.code) and self.code.wrong < self.policy.code_attempts:
            where = "I texted you" if channel == Channel.SMS else "I emailed you"
            return Line(text=f"{prefix}Please say the six-digit code {where}, or key it in.")
        return await self._send_code(channel, prefix + self._code_sent_again(channel))

    async def _on_phone_code(self, said: str) -> Line:
        return await self._check_code(said, Channel.SMS, self._phone_verified)

    async def _phone_verified(self) -> Line:
        if (known := self.input.returning) is not None:  # nothing else to ask: a number, and their agent back
            self.user_id, self.email, self.voice = known.user_id, known.email, known.voice
            self.personality, self.agent_name = known.personality, known.agent_name
            workflow.upsert_search_attributes([USER_ID.value_set(str(self.user_id))])
            self.step = Step.PROVISIONING
            line = await self._provision()
            text = lines.PHONE_VERIFIED + lines.RETURNING + line.text
            self.handoff_words = len(text.split())  # the hand-off waits until all of it has been said
            return Line(text=text, end_call=line.end_call, hand_off=line.hand_off)
        self.step = Step.EMAIL
        return Line(text=lines.PHONE_VERIFIED + lines.ASK_EMAIL)

    async def _on_email(self, said: str) -> Line:
        address = spoken.parse_email(said)
        if address is None:
            return Line(text=lines.EMAIL_NOT_HEARD)
        self.email, self.step = address, Step.EMAIL_CONFIRM
        return Line(text=lines.confirm_email(address))

    async def _on_email_confirmation(self, said: str) -> Line:
        answer = spoken.parse_confirmation(said)
        if answer is None:
            if spoken.parse_email(said):  # a corrected address, said straight away
                return await self._on_email(said)
            return Line(text="Sorry, was that a yes or a no? " + lines.confirm_email(self.email))
        if not answer:
            self.step = Step.EMAIL
            return Line(text=lines.EMAIL_RETRY)
        self.step = Step.EMAIL_CODE
        return await self._send_code(Channel.EMAIL, lines.EMAIL_CODE_SENT)

    async def _on_email_code(self, said: str) -> Line:
        if spoken.wants_different_email(said):
            self.step, self.code = Step.EMAIL, None
            return Line(text=lines.ASK_EMAIL)
        return await self._check_code(said, Channel.EMAIL, self._email_verified)

    async def _email_verified(self) -> Line:
        self.step = Step.VOICE
        return Line(text=lines.EMAIL_VERIFIED + lines.ASK_VOICE)

    async def _on_voice(self, said: str) -> Line:
        return self._chosen(spoken.parse_option(said, lines.VOICE_NAMES), "voice", Step.PERSONALITY,
                            lines.VOICE_NOT_HEARD, lines.VOICE_CHOSEN)

    async def _on_personality(self, said: str) -> Line:
        return self._chosen(spoken.parse_personality(said), "personality", Step.NAME,
                            lines.PERSONALITY_NOT_HEARD, lines.PERSONALITY_CHOSEN)

    def _chosen(self, choice: str | None, field: str, next_step: Step, not_heard: str, then: str) -> Line:
        if choice is None:
            return Line(text=not_heard)
        setattr(self, field, choice)
        self.step = next_step
        return Line(text=then.format(choice.title()))

    async def _on_name(self, said: str) -> Line:
        name = spoken.parse_name(said)
        if name is None:
            return Line(text=lines.NAME_NOT_HEARD)
        self.agent_name = name or lines.DEFAULT_AGENT_NAME
        self.step = Step.PIN
        return Line(text=lines.name_chosen(self.agent_name))

    async def _on_pin(self, heard: Heard) -> Line:
        if heard.pin_digest:
            self.pin_digest = heard.pin_digest
        elif not spoken.wants_skip(heard.text):
            return Line(text=lines.PIN_NOT_HEARD)
        self.step = Step.PROVISIONING
        return await self._provision()

    # ---- codes ----------------------------------------------------------------------------

    def _code_sent_again(self, channel: Channel) -> str:
        return lines.CODE_SENT_AGAIN if channel == Channel.SMS else lines.EMAIL_CODE_SENT_AGAIN

    def _expired(self, code: PendingCode) -> bool:
        return workflow.now() - code.sent_at > self.policy.code_ttl

    async def _send_code(self, channel: Channel, line: str) -> Line:
        if self.codes_sent[channel] >= self.policy.codes_per_channel:
            self.step, self.code = Step.LOCKED_OUT, None
            return Line(text=lines.TOO_MANY_CODES, end_call=True)
        to = self.input.caller if channel == Channel.SMS else self.email
        try:
            digest = await workflow.execute_activity_method(
                VerificationActivities.send_code, CodeRequest(channel=channel, to=to, sender=self.input.hotline_number),
                **SEND)
        except ActivityError as error:
            workflow.logger.error("could not send a %s code to %s: %s", channel.value, to, error.cause or error)
            return Line(text=lines.CODE_NOT_SENT)
        self.codes_sent[channel] += 1
        self.code = PendingCode(channel=channel, digest=digest, sent_at=workflow.now())
        return Line(text=line)

    async def _check_code(self, said: str, channel: Channel, verified: Callable[[], Awaitable[Line]]) -> Line:
        if spoken.wants_new_code(said) or self.code is None:
            return await self._send_code(channel, self._code_sent_again(channel))
        guess = spoken.parse_code(said)
        if guess is None:
            return Line(text=lines.CODE_NOT_HEARD)
        if self._expired(self.code):
            return Line(text=lines.CODE_EXPIRED)
        if self.code.wrong >= self.policy.code_attempts:
            return Line(text=lines.CODE_LOCKED)
        to = self.input.caller if channel == Channel.SMS else self.email
        digest = await workflow.execute_local_activity_method(
            VerificationActivities.code_digest, CodeGuess(to=to, code=guess, sent_digest=self.code.digest),
            start_to_close_timeout=timedelta(seconds=5))
        if digest != self.code.digest:
            self.code.wrong += 1
            return Line(text=lines.code_wrong(self.policy.code_attempts - self.code.wrong))
        self.code = None
        return await verified()

    # ---- provisioning and hand-off --------------------------------------------------------

    async def _provision(self) -> Line:
        if self.user_id is None:
            self.user_id = workflow.uuid4()
            workflow.upsert_search_attributes([USER_ID.value_set(str(self.user_id))])
        user = NewUser(user_id=self.user_id, phone=self.input.caller, email=self.email,
                       voice=lines.VOICES.get(self.voice, self.voice), personality=self.personality,
                       agent_name=self.agent_name, pin_digest=self.pin_digest)
        self._show()
        try:
            provisioned = await workflow.execute_child_workflow(
                ProvisionUserWorkflow.run,
                ProvisionInput(user=user, area_code=area_code(self.input.caller), runtime=self.input.runtime,
                               pool_workflow_id=self.input.pool_workflow_id, thresholds=self.input.thresholds,
                               archived_numbers=self.input.archived_numbers),
                id=provision_id(self.user_id))
        except ChildWorkflowError as error:
            workflow.logger.error("provisioning %s failed: %s", self.user_id, error.cause or error)
            return Line(text=lines.PROVISIONING_FAILED, end_call=True)  # calling back tries again
        self.number, self.step, self.handoff_due = provisioned.number, Step.HANDOFF, True
        line = lines.all_set(self.agent_name, provisioned.number)
        self.handoff_words = len(line.split())
        return Line(text=line, hand_off=True)

    async def _hand_off(self) -> None:
        """Once the caller has heard their number, their call goes to their new agent."""
        assert self.user_id is not None and self.number is not None
        self.handoff_due = False
        self._show()
        # Once the line has played (the bridge says so). If it never says, on a generous estimate of the
        # line's length: late is dead air, early would cut the caller's new number off.
        try:
            await workflow.wait_condition(lambda: self.handoff_line_played, timeout=timedelta(
                seconds=2 * self.handoff_words / self.policy.words_per_second) + self.policy.handoff_grace)
        except TimeoutError:
            workflow.logger.info("no word that the hand-off line has played; handing off on the estimate")
        await workflow.execute_activity_method(
            HotlineCallActivities.hand_off_call,
            Handoff(call_sid=self.call_sid, user_id=self.user_id, agent_name=self.agent_name), **HAND_OFF)
        await workflow.execute_activity_method(
            HotlineCallActivities.send_welcome,
            Welcome(to=self.input.caller, sender=self.number, agent_name=self.agent_name), **SEND)
        self.step = Step.DONE
