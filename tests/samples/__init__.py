"""NVIDIA's FastAPI function samples (NVIDIA/nvcf, examples/function-samples/, Apache-2.0),
vendored unchanged so tests can run them against the emulator as a user would."""
