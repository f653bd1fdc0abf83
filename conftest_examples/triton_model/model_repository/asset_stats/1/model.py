"""A Triton Python-backend model for NVCF that reads the request's input assets.

It runs unmodified in ``tritonserver --http-header-forward-pattern NVCF-.*`` and in the
emulator's ``TritonContainer``. For each asset referenced with ``NVCF-INPUT-ASSET-REFERENCES``
it answers the asset id, its size and its SHA-256.
"""

import hashlib
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

try:  # the module NVCF's asset documentation imports
    from triton_python_backend_utils import helpers
except ImportError:  # NVIDIA's published helper library (pip install nv-cloud-function-helpers)
    from nv_cloud_function_helpers.nvcf_container import helpers


class TritonPythonModel:
    def initialize(self, args):
        self.model_config = json.loads(args["model_config"])
        sizes = pb_utils.get_output_config_by_name(self.model_config, "SIZES")
        self.sizes_dtype = pb_utils.triton_string_to_numpy(sizes["data_type"])
        chunk = helpers.get_config_value("HASH_CHUNK_BYTES", self.model_config)
        self.chunk_bytes = int(chunk)

    def execute(self, requests):
        responses = []
        for request in requests:
            # The NVCF-* headers, as Triton forwarded them (keys may arrive in any case).
            params = json.loads(request.parameters())
            asset_dir = helpers.get_input_path(params)
            asset_ids = [i for i in helpers.get_asset_ids(params) if i]
            if not asset_ids:
                error = pb_utils.TritonError(
                    "no input assets: invoke with NVCF-INPUT-ASSET-REFERENCES, and start "
                    "tritonserver with --http-header-forward-pattern NVCF-.*",
                    pb_utils.TritonError.INVALID_ARG,
                )
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue

            label = pb_utils.get_input_tensor_by_name(request, "LABEL").as_numpy()
            sizes, digests = [], []
            for asset_id in asset_ids:
                digest = hashlib.sha256()
                with open(os.path.join(asset_dir, asset_id), "rb") as f:
                    while chunk := f.read(self.chunk_bytes):
                        digest.update(chunk)
                sizes.append(os.path.getsize(os.path.join(asset_dir, asset_id)))
                digests.append(digest.hexdigest().encode())

            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor(
                            "ASSET_IDS", np.array([i.encode() for i in asset_ids], dtype=object)
                        ),
                        pb_utils.Tensor("SIZES", np.array(sizes, dtype=self.sizes_dtype)),
                        pb_utils.Tensor("SHA256", np.array(digests, dtype=object)),
                        pb_utils.Tensor("LABEL_OUT", label),
                    ]
                )
            )
        return responses

    def finalize(self):
        pb_utils.Logger.log_info("asset_stats unloaded")
