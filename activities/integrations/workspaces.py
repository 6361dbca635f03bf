"""The Workspace adapter for a user's connection to a provider."""

from __future__ import annotations

import uuid

from activities.integrations.credentials import Credentials
from activities.integrations.google import GoogleWorkspace
from activities.integrations.microsoft import MicrosoftWorkspace
from core.integrations import Provider
from core.workspace import Workspace


def workspace_of(credentials: Credentials, user_id: uuid.UUID, provider: Provider) -> Workspace:
    if provider == Provider.GOOGLE:
        return GoogleWorkspace(credentials, user_id)
    return MicrosoftWorkspace(credentials, user_id)
