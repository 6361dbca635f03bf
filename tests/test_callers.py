"""Who reaches a user's agent (core.callers): the owner when the caller ID is fully attested; a PIN
otherwise, or from other phones when the owner allows them; a message taker for everyone else."""

from __future__ import annotations

import uuid

import pytest

from core.callers import FULL_ATTESTATION, CallerTrust, InvalidPin, classify, pin_digest, pin_matches
from core.models import User
from core.tokens import Keyring

OWNER, OTHER = "+15550101000", "+15550102000"


def _user(**fields: object) -> User:
    return User(id=uuid.uuid4(), phone_e164=OWNER, **fields)


def test_callers_are_classified_by_number_attestation_and_pin() -> None:
    plain, with_pin = _user(), _user(pin_digest="k:d")
    roaming = _user(pin_digest="k:d", allow_other_phones=True)
    assert classify(plain, OWNER, FULL_ATTESTATION) == CallerTrust.OWNER
    assert classify(plain, OWNER, "TN-Validation-Passed-B") == CallerTrust.MESSAGE, "no PIN to ask for"
    assert classify(with_pin, OWNER, "TN-Validation-Passed-B") == CallerTrust.PIN
    assert classify(with_pin, OWNER, None) == CallerTrust.PIN
    assert classify(with_pin, OTHER, FULL_ATTESTATION) == CallerTrust.MESSAGE, "other phones only if allowed"
    assert classify(roaming, OTHER, FULL_ATTESTATION) == CallerTrust.PIN
    assert classify(_user(allow_other_phones=True), OTHER, FULL_ATTESTATION) == CallerTrust.MESSAGE


def test_a_pin_is_kept_as_a_keyed_digest_of_that_user() -> None:
    ring = Keyring.of("a-platform-secret-of-at-least-32-chars")
    digest = pin_digest(ring, OWNER, "2468")
    assert "2468" not in digest
    assert pin_matches(ring, OWNER, digest, "2468")
    assert not pin_matches(ring, OWNER, digest, "2469")
    assert pin_digest(ring, OTHER, "2468") != digest, "the same PIN of another user differs"
    assert not pin_matches(ring, OTHER, digest, "2468")
    assert not pin_matches(ring, OWNER, None, "2468")
    for bad in ("123", "123456789", "12a4"):
        with pytest.raises(InvalidPin):
            pin_digest(ring, OWNER, bad)
