"""Schema-driven fuzzing (schemathesis) of the whole documented API, in-process and over a socket.

Every response must be documented for its operation and match its schema; no 5xx, ever. The
number of examples per operation is small in ``make test`` and larger in ``make fuzz``
(``NVCF_FUZZ_EXAMPLES``). The schema is the one the emulator serves at
``/_emulator/openapi.json``.
"""

from __future__ import annotations

import os

import schemathesis
from hypothesis import HealthCheck, settings

from nvcf_emulator.http.openapi import document

from .conftest import Api

EXAMPLES = int(os.environ.get("NVCF_FUZZ_EXAMPLES", "15"))
AUTH = {"Authorization": "Bearer nvapi-fuzz"}

# Injected faults (latency up to 10 minutes, any 4xx/5xx) would turn later fuzz calls into the
# very failures the fuzzer looks for; the fault API has its own tests (test_faults.py).
schema = schemathesis.openapi.from_dict(document()).exclude(path="/_emulator/faults", method="POST")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_fuzz(case: schemathesis.Case, api: Api) -> None:
    case.call_and_validate(base_url=api.base_url, headers=AUTH)


def test_served_schema_is_the_fuzzed_one(api: Api) -> None:
    import requests

    assert requests.get(f"{api.base_url}/_emulator/openapi.json").json() == document()
