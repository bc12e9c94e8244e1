"""The inference service's benchmark: raw ONNX Runtime vs the service over HTTP."""
