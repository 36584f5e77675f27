"""Canary analysis: metric queries turned into verdicts."""
