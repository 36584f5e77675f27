"""Thin kopf wiring and the reconcile it drives."""
