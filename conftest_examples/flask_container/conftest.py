"""Copy into your container repo's tests/: register the app as an NVCF function per test.

The ``nvcf`` fixture (from the installed plugin) is an in-process emulator; ``asset_reader``
deploys the Flask app on it and gives the function id.
"""

from __future__ import annotations

import pytest

from nvcf_emulator import Emulator

from .app import app


@pytest.fixture
def asset_reader(nvcf: Emulator) -> str:
    fn = nvcf.add_function(app, name="asset-reader", inference_url="/infer")
    return fn.function_id
