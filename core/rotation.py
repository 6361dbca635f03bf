"""`deepclaw rotate-keys`: every sealed record's data key re-wrapped under the current encryption key
(core.keyring), so the previous keys can be dropped. The data itself is not re-encrypted, and no
user has to consent again. Safe to run again or alongside the platform: a row that changed since it
was read is left for the next run (its new ciphertext is under the current key already)."""

from __future__ import annotations

import logging
from collections import Counter

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import transaction
from core.integrations import credential_context
from core.keyring import DataKeyring, KeyringError
from core.models import OAuthCredential

log = logging.getLogger(__name__)


async def rewrap_all(ring: DataKeyring, sessions: async_sessionmaker[AsyncSession]) -> Counter[str]:
    """Re-wraps every sealed column under `ring`'s current key; counts rows by what was done."""
    done: Counter[str] = Counter()
    async with sessions() as session:
        rows = (await session.execute(select(OAuthCredential.id, OAuthCredential.user_id, OAuthCredential.provider,
                                             OAuthCredential.ciphertext))).all()
    for row_id, user_id, provider, blob in rows:
        if ring.key_id(blob) == ring.current:
            done["current already"] += 1
            continue
        try:
            rewrapped = ring.rewrap(blob, context=credential_context(user_id, provider))
        except KeyringError as error:  # its key is not configured any more: say which row, go on
            log.error("oauth credential %s cannot be re-wrapped: %s", row_id, error)
            done["cannot open"] += 1
            continue
        async with transaction(sessions) as session:
            changed = await session.execute(update(OAuthCredential).where(
                OAuthCredential.id == row_id, OAuthCredential.ciphertext == blob).values(ciphertext=rewrapped))
        done["re-wrapped" if changed.rowcount else "changed meanwhile"] += 1  # type: ignore[attr-defined]
    log.info("encryption keys: %s (current key %r)", dict(done) or "no sealed records", ring.current)
    return done
