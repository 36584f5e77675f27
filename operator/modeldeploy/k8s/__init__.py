"""The one layer that talks to the Kubernetes API."""
