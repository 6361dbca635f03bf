"""The platform fuzzed at length: what tests/test_fuzz.py runs with a small budget (tests/fuzzing.py),
here with EXAMPLES cases per schema operation (several times as many for each property), against a
platform of its own on a freshly started scratch stack (embedded PostgreSQL, Temporal dev server).

Prints how far the cases reached (status codes per family) and every failure; the last line is
{"cases", "failures", "unauthenticated_2xx", "server_errors"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.db import create_engine, sessionmaker  # noqa: E402
from devstack.scratch import scratch_stack  # noqa: E402
from tests.fuzzing import fuzz, fuzz_settings, start_target  # noqa: E402

EXAMPLES = 100


async def main(examples: int) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="deepclaw-fuzz-") as tmp:
        async with scratch_stack(Path(tmp), "fuzz") as stack, AsyncExitStack() as platform:
            settings = fuzz_settings(stack.database_url, stack.temporal.address, Path(tmp) / "data")
            engine = create_engine(settings.database_url)
            platform.push_async_callback(engine.dispose)
            target = await start_target(platform, settings, sessionmaker(engine))
            started = time.monotonic()
            tally = await fuzz(target, examples=examples)
            took = time.monotonic() - started
    for key, count in sorted(tally.statuses.items()):
        print(f"  {key}: {count}")
    for failure in tally.failures:
        print(f"FAILURE {failure}")
    print(f"{tally.cases} cases in {took:.0f} s ({tally.cases / took:.0f}/s)")
    return tally.summary()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=EXAMPLES, help="cases per schema operation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    # The fuzzing client's own socket library reports the bridge closing on a bad frame: expected.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    print(json.dumps(asyncio.run(main(args.examples))))
