"""modeldeploy: a Kubernetes operator that deploys BentoML models."""

__version__ = "0.1.0"
