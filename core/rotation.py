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
from core.integrations import credential_context, header_context
from core.keyring import DataKeyring, KeyringError
from core.models import McpServer, OAuthCredential

log = logging.getLogger(__name__)


async def rewrap_all(ring: DataKeyring, sessions: async_sessionmaker[AsyncSession]) -> Counter[str]:
    """Re-wraps every sealed column under `ring`'s current key; counts rows by what was done."""
    done: Counter[str] = Counter()
    async with sessions() as session:
        tokens = (await session.execute(select(OAuthCredential.id, OAuthCredential.user_id, OAuthCredential.provider,
                                               OAuthCredential.ciphertext))).all()
        headers = (await session.execute(select(McpServer.id, McpServer.user_id, McpServer.headers_ciphertext)
                                         .where(McpServer.headers_ciphertext.is_not(None)))).all()  # type: ignore[union-attr]
    sealed = [(OAuthCredential, OAuthCredential.ciphertext, row_id, blob, credential_context(user_id, provider))
              for row_id, user_id, provider, blob in tokens]
    sealed += [(McpServer, McpServer.headers_ciphertext, row_id, blob, header_context(user_id, row_id))
               for row_id, user_id, blob in headers]
    for table, column, row_id, blob, context in sealed:
        try:
            if ring.key_id(blob) == ring.current:
                done["current already"] += 1
                continue
            rewrapped = ring.rewrap(blob, context=context)
        except KeyringError as error:  # not sealed, or its key is not configured any more: say which row, go on
            log.error("%s %s cannot be re-wrapped: %s", table.__tablename__, row_id, error)
            done["cannot open"] += 1
            continue
        async with transaction(sessions) as session:
            changed = await session.execute(update(table).where(table.id == row_id, column == blob)
                                            .values({column.key: rewrapped}))
        done["re-wrapped" if changed.rowcount else "changed meanwhile"] += 1  # type: ignore[attr-defined]
    log.info("encryption keys: %s (current key %r)", dict(done) or "no sealed records", ring.current)
    return done
