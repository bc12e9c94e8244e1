"""The inference service: Open Inference Protocol over ONNX Runtime, with dynamic batching,
a prediction cache, stable/candidate routing and a non-blocking prediction log.
"""
