"""Connecting to Temporal from settings, and the search attributes operators use to find users."""

from __future__ import annotations

import dataclasses

from temporalio.client import Client, TLSConfig
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes

from core.payload_codec import EncryptionCodec
from core.settings import Settings

USER_ID = SearchAttributeKey.for_keyword("UserId")
USER_PHONE = SearchAttributeKey.for_keyword("UserPhone")
AGENT_NUMBER = SearchAttributeKey.for_keyword("AgentNumber")
LIFECYCLE_STATE = SearchAttributeKey.for_keyword("LifecycleState")

SEARCH_ATTRIBUTES = (USER_ID, USER_PHONE, AGENT_NUMBER, LIFECYCLE_STATE)


def _tls(settings: Settings) -> TLSConfig | bool:
    if settings.temporal_tls_cert_path and settings.temporal_tls_key_path:
        return TLSConfig(
            client_cert=settings.temporal_tls_cert_path.read_bytes(),
            client_private_key=settings.temporal_tls_key_path.read_bytes(),
        )
    # An API key (Temporal Cloud) implies TLS.
    return settings.temporal_tls or settings.temporal_api_key is not None


def data_converter(settings: Settings) -> DataConverter:
    """Pydantic models in, encrypted payloads out (core/payload_codec.py); failure messages and stack
    traces go into the encrypted part too. Every client and worker of the platform uses this."""
    return dataclasses.replace(pydantic_data_converter, payload_codec=EncryptionCodec(settings.data_keyring),
                               failure_converter_class=DefaultFailureConverterWithEncodedAttributes)


async def connect(settings: Settings) -> Client:
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        tls=_tls(settings),
        api_key=api_key,
        data_converter=data_converter(settings),
    )
