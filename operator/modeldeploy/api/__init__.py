"""The versioned ModelDeployment API: pydantic models (the single source of truth) and the CRD built from them.

Only what a user reads or writes lives here; the operator's internal contracts are in `modeldeploy.model`.
"""
