"""The model repository as a container object, for ``nvcf-emulate``:

    nvcf-emulate --function asset-stats=conftest_examples.triton_model.container:triton \\
                 --inference-url /v2/models/asset_stats/infer

Importing this module loads the models, as ``tritonserver`` does at start-up.
"""

from __future__ import annotations

from pathlib import Path

from nvcf_emulator.triton import TritonContainer

triton = TritonContainer(Path(__file__).parent / "model_repository")
