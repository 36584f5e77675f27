"""Pure renderers, one module per child kind: a ModelDeployment and what the rollout wants in, manifests out.

Each kind's entry point takes a `Desired` and returns that kind's objects; the table of child
kinds (modeldeploy.k8s.children) lists them in the order they are applied.
"""
