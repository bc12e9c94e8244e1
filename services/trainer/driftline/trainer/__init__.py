"""The online trainer: learns from labeled examples with torch, guards against forgetting,
and registers each new version in MLflow.
"""
