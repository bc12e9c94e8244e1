"""The Open Inference Protocol's gRPC messages and service: `inference.proto` and the
modules `make grpc-stubs` generates from it (committed; never edited by hand)."""
