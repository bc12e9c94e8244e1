"""The Kubernetes operator: kopf handlers that reconcile DynamicModel resources into
running parts.
"""
