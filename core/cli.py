"""`deepclaw`: one entry point for every process, so production runs each as its own Deployment.
Development commands (the local platform behind `make run`, the pinned tools) are `python -m devstack`
(devstack/__main__.py), which runs through `main` here: no production module imports devstack."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable

from core.logs import configure_logging
from core.settings import get_settings

log = logging.getLogger("deepclaw")


def _api(_: argparse.Namespace) -> None:
    import uvicorn

    from api.app import create_app
    from core.serve import server_options

    settings = get_settings()
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port,
                **server_options(settings.forwarded_allow_ips))


def _voice(_: argparse.Namespace) -> None:
    import uvloop

    from voice.server import run_voice

    uvloop.run(run_voice(get_settings()))


def _worker(_: argparse.Namespace) -> None:
    from workers.main import run_worker

    asyncio.run(run_worker(get_settings()))


def _migrate(args: argparse.Namespace) -> int:
    from core.migrate import upgrade_to_head, wait_for_head

    settings = get_settings()
    if args.wait is not None:  # a new version's pods, while the migration Job runs
        return 0 if wait_for_head(settings.database_url, timeout_s=args.wait) else 1
    upgrade_to_head(settings.database_url)
    log.info("database migrated to head")
    return 0


def _standins(_: argparse.Namespace) -> None:
    import uvloop

    from emulators.standins import run_standins

    # uvloop, as the bridge: every call's media passes through the carrier and the voice agent here.
    uvloop.run(run_standins(get_settings()))


def _new_key(args: argparse.Namespace) -> None:
    from core.keyring import new_key_entry

    print(new_key_entry(args.key_id))  # noqa: T201 (the command's output: an operator copies it)


def _rotate_keys(_: argparse.Namespace) -> None:
    from core.db import create_engine, sessionmaker
    from core.rotation import rewrap_all

    async def rotate() -> None:
        settings = get_settings()
        engine = create_engine(settings.database_url)
        try:
            await rewrap_all(settings.data_keyring, sessionmaker(engine))
        finally:
            await engine.dispose()

    asyncio.run(rotate())


# Only in a development checkout (`make bootstrap`), never in the wheel: embedded servers, stand-ins.
DEVELOPMENT_PACKAGES = ("devstack", "emulators")

# What runs in production: refuses development secrets and missing public URLs when a real adapter is on.
DEPLOYED = ("api", "voice", "worker")

COMMANDS = {
    "api": (_api, "serve the API (webhooks, dashboard, internal API)"),
    "voice": (_voice, "serve the voice bridge"),
    "worker": (_worker, "run the Temporal worker"),
    "migrate": (_migrate, "migrate the database to the latest schema"),
    "standins": (_standins, "run the local carrier + softphone, voice agent and model stand-ins"),
    "new-key": (_new_key, "print a new encryption key for DEEPCLAW_ENCRYPTION_KEYS"),
    "rotate-keys": (_rotate_keys, "re-wrap every sealed record under the first DEEPCLAW_ENCRYPTION_KEYS key"),
}


Command = tuple[Callable[[argparse.Namespace], int | None], str]


def main(argv: list[str] | None = None, *, commands: dict[str, Command] = COMMANDS, prog: str = "deepclaw",
         description: str | None = __doc__) -> None:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in commands.items():
        command = sub.add_parser(name, help=help_text)
        if name == "new-key":
            command.add_argument("key_id", nargs="?", default="k1", help="the new key's id (default k1)")
        if name == "migrate":
            command.add_argument("--wait", type=float, metavar="SECONDS", help=(
                "migrate nothing: wait until the schema is at this version's head (exit 1 after SECONDS)"))
    args = parser.parse_args(argv)

    if args.command != "tools":
        # What the platform writes (Temporal's history, logs, archives) is its own: local agents run as
        # other Unix users and must not read it. The tools are installed for them to run, so stay readable.
        os.umask(0o077)
    settings = get_settings()
    configure_logging(args.command, fmt=settings.log_format, level=settings.log_level)
    if args.command in DEPLOYED:
        settings.require_deployable()  # with a real provider, no development secret or missing URL
    handler, _ = commands[args.command]
    code = 0
    try:
        code = handler(args) or 0
    except KeyboardInterrupt:
        pass
    except Exception as error:
        if isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] in DEVELOPMENT_PACKAGES:
            # The production wheel carries no embedded servers or stand-ins.
            log.error("`%s %s` is for development: run it from a checkout (make run), not the production "
                      "image", prog, args.command)
            code = 2
        else:
            log.exception("%s failed", args.command)
            code = 1
    # temporalio can abort at interpreter exit in short CLIs (sdk-python #300): leave at once.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
