"""The local runtime and the `driftline` command: the same DynamicModel YAML on one
machine, without Kubernetes.
"""
