"""What the hotline says. Pure text, so the workflow stays readable and the words stay in one place."""

from __future__ import annotations

VOICES = {"thalia": "aura-2-thalia-en", "orion": "aura-2-orion-en", "luna": "aura-2-luna-en",
          "arcas": "aura-2-arcas-en"}
VOICE_NAMES = list(VOICES)
DEFAULT_AGENT_NAME = "Claw"
HOTLINE_VOICE = VOICES["thalia"]  # the hotline's own
# What callers say to the hotline that a recogniser may not expect: the choices it offers and the
# words of an email address (Deepgram's Nova-3 keyterms; the local voice agent prompts Whisper).
HOTLINE_KEYTERMS = [*(n.title() for n in VOICE_NAMES), "casual", "formal", "skip",
                    "at", "dot", "underscore", "dash", "plus", "gmail dot com", "outlook dot com"]

_SPOKEN_SYMBOLS = {".": "dot", "@": "at", "_": "underscore", "-": "dash", "+": "plus"}


def spell_email(address: str) -> str:
    """Read back the part before @ letter by letter (names are where speech recognition slips),
    the domain as words: "j a n e dot d o e at gmail dot com"."""
    local, _, domain = address.partition("@")
    letters = " ".join(_SPOKEN_SYMBOLS.get(c, c) for c in local)
    return f"{letters} at {' dot '.join(domain.split('.'))}"


def say_number(e164: str) -> str:
    """+15550100123 -> "5 5 5, 0 1 0, 0 1 2 3": in groups, digit by digit, as people read numbers."""
    digits = e164.removeprefix("+1") if e164.startswith("+1") and len(e164) == 12 else e164.lstrip("+")
    groups = [digits[:3], digits[3:6], digits[6:]] if len(digits) == 10 else [digits]
    return ", ".join(" ".join(group) for group in groups)


def choices(names: list[str]) -> str:
    titled = [n.title() for n in names]
    return ", ".join(titled[:-1]) + f" or {titled[-1]}"


WELCOME = "Welcome to DeepClaw! I've texted you a six-digit code. Please say it, or key it in."
WELCOME_BACK = "Welcome back! Let's pick up where we left off. "
CODE_SENT_AGAIN = "I've texted you a fresh six-digit code. Please say it, or key it in."
CODE_NOT_SENT = "Sorry, I couldn't send the code just now. Say new code in a moment and I'll try again."
CODE_NOT_HEARD = "I didn't catch six digits there. Please say the code, or key it in. Say new code if you need another."
CODE_EXPIRED = "That code has expired. Say new code, or press star, and I'll send you a fresh one."
CODE_LOCKED = "That's too many wrong tries for this code. Say new code, or press star, and I'll send you a fresh one."
TOO_MANY_CODES = "I've sent as many codes as I can for now. Please call back a little later. Goodbye."
PHONE_VERIFIED = "Thanks, your phone is verified. "
RETURNING = "Welcome back: your assistant remembers you. "
ASK_EMAIL = "What's your email address? Say it like: jane dot doe at gmail dot com."
EMAIL_NOT_HEARD = ("Sorry, I couldn't make out an email address. Please say it slowly, like: jane dot doe at gmail "
                   "dot com.")
EMAIL_RETRY = "Okay, let's try that again. What's your email address?"
EMAIL_CODE_SENT = "Great. I've emailed you a six-digit code. Say it or key it in, or say different email to change it."
EMAIL_CODE_SENT_AGAIN = "I've emailed you a fresh code. Please say it, or key it in."
EMAIL_VERIFIED = "Your email is verified. "
ASK_VOICE = f"Now pick a voice for your assistant: {choices(VOICE_NAMES)}. You can also press 1 to 4."
VOICE_NOT_HEARD = f"Sorry, I didn't catch which voice. The voices are {choices(VOICE_NAMES)}. Which one would you like?"
ASK_PERSONALITY = "Should your assistant be casual or formal? Press 1 for casual or 2 for formal."
PERSONALITY_NOT_HEARD = "Sorry, was that casual or formal? Press 1 for casual or 2 for formal."
ASK_NAME = f"Now, what would you like to call your assistant? Say a name, or say skip to keep {DEFAULT_AGENT_NAME}."
ASK_PIN = ("Last one: key in a PIN of four to eight digits, for calls from a phone I can't confirm is yours. "
           "Or say skip.")
PIN_NOT_HEARD = "Please key in four to eight digits for your PIN, or say skip."
NAME_NOT_HEARD = f"Sorry, I didn't get a name. Say one or two words, like Nova, or say skip to keep {DEFAULT_AGENT_NAME}."
VOICE_CHOSEN = "{} it is. " + ASK_PERSONALITY  # {} is the choice
PERSONALITY_CHOSEN = "{}, got it. " + ASK_NAME
PROVISIONING_FAILED = ("I'm sorry, I couldn't finish setting up your assistant just now. Please call back in a few "
                       "minutes and I'll pick up right here. Goodbye.")
ONBOARDING_CLOSED = "This setup session has ended. Please call again to start over. Goodbye."


def code_wrong(tries_left: int) -> str:
    if tries_left <= 0:
        return "That code isn't right, and that was the last try. Say new code, or press star, for a fresh one."
    return f"That code isn't right. Please try again. You have {tries_left} more {'try' if tries_left == 1 else 'tries'}."


def confirm_email(address: str) -> str:
    return f"I heard {spell_email(address)}. Is that right?"


def all_set(agent_name: str, number: str) -> str:
    return f"All set! {agent_name}'s number is {say_number(number)}. I'll text it to you too. Connecting you now."


def already_registered(number: str) -> str:
    return (f"Welcome back! You already have an assistant. Its number is {say_number(number)}. "
            "Call it any time. Goodbye.")


def setup_complete(number: str) -> str:
    return f"This setup is complete. Your assistant's number is {say_number(number)}. Goodbye."


def name_chosen(agent_name: str) -> str:
    return f"{agent_name}, lovely. {ASK_PIN}"
