"""ClusterInfo: what a caller needs to use a running local cluster."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from localcluster import images
from localcluster.process import ClusterError


def stderr_log(msg: str) -> None:
    print(f"[localcluster] {msg}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class ClusterInfo:
    """What a caller needs to use a running cluster."""

    dir: Path
    kubeconfig: Path
    bin_dir: Path
    kubectl: Path
    helm: Path
    server: str
    ports: dict[str, int]
    pids: dict[str, int]
    versions: dict[str, str]
    real_node: bool

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """An environment for subprocesses: KUBECONFIG set, bin dir first on PATH."""
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def image_builder(self, log: Callable[[str], None] | None = None) -> images.Builder:
        """buildah configured for this cluster's registry (the real node only)."""
        if not self.real_node:
            raise ClusterError("this cluster runs without a real node, hence without a registry")
        builder = images.Builder(self.ports["registry"], self.dir / "images", log or stderr_log)
        return builder.prepare()


def _stderr_log(msg: str) -> None:
    print(f"[localcluster] {msg}", file=sys.stderr, flush=True)
