"""The ModelDeployment API: pydantic models (the single source of truth) and the CRD built from them."""
