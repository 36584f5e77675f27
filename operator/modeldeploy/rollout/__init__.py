"""Pure rollout logic: from a ModelDeployment and what is observed, what should run and the status to show.

No I/O and no clock: the time comes in with the observation.
"""
