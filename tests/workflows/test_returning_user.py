"""A returning user (their number released after a long archive) signs up again: same user, a number
from the pool, their agent restored. Its own module, so its own time-skipping server: skipping months
must not meet timers other tests' workflows left behind."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from api.routes.hotline import returning_user
from core.models import PhoneNumber, User
from tests.workflows.test_onboarding import Hotline, _caller, _complete_dialog, hotline, say  # noqa: F401
from workflows import onboarding_lines as lines
from workflows.agent_lifecycle import AgentLifecycleWorkflow, LifecycleState
from workflows.agent_lifecycle import workflow_id as lifecycle_id
from workflows.onboarding import OnboardingResult, Step


@pytest.mark.parametrize("archive_lost", [False, True], ids=["restored", "archive-gone"])
async def test_a_user_whose_number_was_released_signs_up_again(
    hotline: Hotline, time_skipping_env: WorkflowEnvironment, archive_lost: bool,
) -> None:
    """Months without a call: the agent is archived and its number released. Calling the hotline again,
    the user proves their phone and nothing else: same user, a number from the pool, their agent back
    from the archive (or a fresh one if the archive is gone)."""
    await hotline.add_pool_numbers(2)
    caller = _caller(hotline.area)
    handle, _ = await hotline.call(caller)
    assert (await _complete_dialog(hotline, handle, caller)).startswith("All set!")
    first: OnboardingResult = await hotline.finished(handle)
    assert first.user_id is not None
    lifecycle = hotline.client.get_workflow_handle(lifecycle_id(first.user_id))
    await time_skipping_env.sleep(timedelta(days=125))
    for _ in range(200):
        async with hotline.sessions() as session:
            held = (await session.execute(select(PhoneNumber).where(PhoneNumber.user_id == first.user_id))).first()
        if held is None:
            break
        await asyncio.sleep(0.1)
    assert held is None, "the long-archived user's number was released"
    assert await lifecycle.query(AgentLifecycleWorkflow.current_state) == LifecycleState.ARCHIVED
    if archive_lost:
        hotline.runtime.lost_archives.add(first.user_id)

    returning = await returning_user(hotline.sessions, caller)
    assert returning is not None and returning.user_id == first.user_id and returning.agent_name == "Nova"
    handle, opening = await hotline.call(caller, returning=returning)
    assert opening.text == lines.WELCOME
    final = await say(handle, hotline.sms_code(caller))
    assert final.startswith(lines.PHONE_VERIFIED + lines.RETURNING + "All set! Nova's number is"), final
    second: OnboardingResult = await hotline.finished(handle)
    assert second.step == Step.DONE and second.user_id == first.user_id and second.number
    async with hotline.sessions() as session:
        number = (await session.execute(select(PhoneNumber).where(PhoneNumber.user_id == first.user_id))).scalar_one()
        users = (await session.execute(select(User).where(User.phone_e164 == caller))).scalars().all()
    assert number.e164 == second.number and number.state == "assigned"
    assert [u.id for u in users] == [first.user_id], "the same user, not a second one"
    for _ in range(200):
        if await lifecycle.query(AgentLifecycleWorkflow.current_state) == LifecycleState.RUNNING:
            break
        await asyncio.sleep(0.1)
    assert await lifecycle.query(AgentLifecycleWorkflow.current_state) == LifecycleState.RUNNING
    if archive_lost:
        assert hotline.runtime.calls["create"] == 2 and hotline.runtime.calls["restore"] == 0, "a fresh agent"
    else:
        assert hotline.runtime.calls["restore"] == 1 and hotline.runtime.calls["create"] == 1, "restored"
    welcome = [m for m in hotline.carrier.carrier.messages.values() if m.to == caller and m.from_ == second.number]
    assert welcome, "the welcome comes from the new number"
    await lifecycle.terminate()
