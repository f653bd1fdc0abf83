"""NVIDIA's gRPC echo sample (NVIDIA/nvcf ``examples/function-samples/grpc-echo-sample``,
Apache-2.0): ``echo.proto``, its server, and stubs generated once with grpcio-tools 1.60.2
(committed, so the tests need grpcio and protobuf only)."""
