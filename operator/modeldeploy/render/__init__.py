"""Pure renderers: a ModelDeployment and a rollout plan in, child manifests out. No I/O."""

from modeldeploy.render.children import RenderConfig, render_children

__all__ = ["RenderConfig", "render_children"]
