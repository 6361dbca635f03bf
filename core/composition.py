"""The composition root: settings -> the adapter behind each port. The only place that knows which
adapters exist; the API, the voice bridge and the worker build theirs here."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.archive.stores import FolderArchiveStore, S3ArchiveStore
from activities.billing.local import LocalBilling
from activities.email.mailers import OutboxMailer, SmtpMailer
from activities.search.duckduckgo import DuckDuckGoSearch
from activities.speech.deepgram import DeepgramSpeech
from activities.telephony.twilio import TwilioTelephony
from core.ports import AgentRuntime, ArchiveStore, Billing, Mailer, Speech, WebSearch
from core.settings import (
    AgentRuntimeAdapter,
    ArchiveStoreAdapter,
    MailerAdapter,
    Settings,
)


def secret(value: object) -> str | None:
    return value.get_secret_value() if value is not None else None  # type: ignore[attr-defined]


def telephony(settings: Settings) -> TwilioTelephony:
    # Local and real share the adapter: the local carrier speaks Twilio's API.
    return TwilioTelephony(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value(),
                           api_base_url=settings.twilio_api_base_url, edge=settings.twilio_edge,
                           region=settings.twilio_region)


def web_search(settings: Settings) -> WebSearch:
    # Local and real share the adapter: the stand-in serves DuckDuckGo-shaped pages.
    return DuckDuckGoSearch(settings.web_search_url, region=settings.web_search_region)


def speech(settings: Settings) -> Speech:
    # Local and real share the adapter: the voice-agent stand-in serves Deepgram's /v1/speak.
    return DeepgramSpeech(settings.speech_base_url, secret(settings.deepgram_api_key))


def mailer(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> Mailer:
    if settings.mailer == MailerAdapter.SMTP:
        return SmtpMailer(host=settings.smtp_host, port=settings.smtp_port, sender=settings.mail_from,
                          username=settings.smtp_username, password=secret(settings.smtp_password),
                          starttls=settings.smtp_starttls)
    return OutboxMailer(sessions)


def billing(sessions: async_sessionmaker[AsyncSession]) -> Billing:
    # Statements are recorded in the platform's database; a payment provider's adapter comes with one.
    return LocalBilling(sessions)


def archive_store(settings: Settings) -> ArchiveStore:
    if settings.archive_store == ArchiveStoreAdapter.S3:
        return S3ArchiveStore(bucket=settings.s3_bucket, endpoint_url=settings.s3_endpoint_url,
                              region=settings.s3_region, access_key=settings.s3_access_key,
                              secret_key=secret(settings.s3_secret_key))
    return FolderArchiveStore(settings.data_dir.resolve() / "archive")


def agent_runtime(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> AgentRuntime:
    if settings.agent_runtime == AgentRuntimeAdapter.KUBERNETES:
        return kubernetes_runtime(settings, sessions)
    from activities.runtime.local import LocalAgentRuntime
    from activities.runtime.openclaw_config import ModelProvider
    from activities.runtime.tools import Tools

    return LocalAgentRuntime(Tools(settings.tools_dir.expanduser()).require(), settings.data_dir.resolve() / "agents",
                             ModelProvider.from_settings(settings), keyring=settings.keyring,
                             spares=settings.local_agent_spares, reachable=[settings.api_base_url])  # MCP server


def kubernetes_runtime(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> AgentRuntime:
    from kubernetes import client, config

    from activities.runtime.k8s_manifests import ClusterSettings
    from activities.runtime.kubernetes import KubernetesAgentRuntime
    from activities.runtime.openclaw_config import ModelProvider

    image = settings.kubernetes_agent_image
    if not image or "@sha256:" not in image:
        raise ValueError("DEEPCLAW_KUBERNETES_AGENT_IMAGE must name the agent image pinned by digest (…@sha256:…)")
    store = archive_store(settings)
    if not isinstance(store, S3ArchiveStore):
        raise ValueError("DEEPCLAW_AGENT_RUNTIME=kubernetes keeps sleeping agents' state in the archive store: "
                         "set DEEPCLAW_ARCHIVE_STORE=s3")
    configuration = client.Configuration()
    if settings.kubeconfig:
        config.load_kube_config(config_file=str(settings.kubeconfig.expanduser()), client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    cluster = ClusterSettings(namespace=settings.kubernetes_namespace,
                              platform_namespace=settings.kubernetes_platform_namespace, image=image,
                              pool=settings.kubernetes_agent_pool, spares=settings.kubernetes_agent_spares)
    return KubernetesAgentRuntime(client.ApiClient(configuration), cluster, ModelProvider.from_settings(settings),
                                  keyring=settings.keyring, sessions=sessions, urls=store)
