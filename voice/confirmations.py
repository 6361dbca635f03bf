"""The owner's spoken yes or no to an action the agent proposed during their call (sending mail,
cancelling an event: activities/integrations/actions.py). The voice proxy asks here first, each
turn of a trusted call: if something waits on this call and the caller's words are a plain yes or
no, the platform carries it out (or not) and says what happened; the words never reach the agent,
so neither the agent nor anything it read can say yes for the owner. Anything else goes on to the
agent as usual, and the action keeps waiting (the text route stays open)."""

from __future__ import annotations

import logging
import re
import uuid

from activities.integrations.actions import PendingActions

log = logging.getLogger(__name__)

MAX_WORDS = 6  # a longer answer is a conversation, for the agent
_YES = {"yes", "yeah", "yep", "yup", "sure", "ok", "okay", "confirm", "confirmed", "correct", "go ahead", "send it",
        "do it", "please do", "cancel it", "yes please", "go for it", "absolutely"}
_NO = {"no", "nope", "nah", "don't", "do not", "not yet", "wait", "hold on", "stop", "keep it", "never mind"}


def spoken_answer(words: str) -> bool | None:
    """True for a plain yes, False for a plain no (a "no" anywhere wins: "no, don't send it"), None
    for anything else."""
    cleaned = " ".join(re.sub(r"[^a-z' ]", " ", words.lower()).split())
    if not cleaned or len(cleaned.split()) > MAX_WORDS:
        return None

    def said(phrases: set[str]) -> bool:
        return any(re.search(rf"(?<![a-z']){re.escape(p)}(?![a-z'])", cleaned) for p in phrases)

    if said(_NO):
        return False
    return True if said(_YES) else None


class SpokenConfirmations:
    def __init__(self, actions: PendingActions) -> None:
        self.actions = actions

    async def heard(self, stream: uuid.UUID, user_id: uuid.UUID, words: str) -> str | None:
        """What the platform says when the caller answered an action waiting on this call; None if
        nothing waits or the words are not a plain yes or no."""
        answer = spoken_answer(words)
        if answer is None:
            return None
        said = await self.actions.decide_on_call(user_id, stream, answer)
        if said is not None:
            log.info("user %s answered %s on their call", user_id, "yes" if answer else "no")
        return said
