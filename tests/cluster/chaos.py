"""Chaos: a fault at a random moment of a canary walk, and what the cluster looks like after.

Shared by tests/cluster/test_chaos.py (a few trials, in `make test`) and benchmarks/chaos.py (more,
printing trials / converged / worst time to converge per fault). Two replicas run, as the chart runs
them; in each trial a fresh ModelDeployment is made Ready, updated to a new bento, and at a random
moment of the walk that follows one fault strikes: the replica holding the Lease SIGKILLed and started
again (as a standby), or the API server or etcd SIGKILLed and started again with the same data. The
trial converges when the canary is promoted with exactly the expected children (one Deployment, of
the new image, and one Service), and no Event of the operator's was posted twice.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localcluster import LocalCluster
from localcluster.kit import OPERATOR_NAMESPACE, Cluster, Operator, sample
from modeldeploy.api.v1alpha1 import API_VERSION, KIND
from modeldeploy.k8s.client import Client

LEASE = "modeldeploy-operator"
STEPS = [{"weight": 25, "pause": "2s"}, {"weight": 50, "pause": "2s"}]
V1 = "registry.example.com/iris-classifier:v1"
V2 = "registry.example.com/iris-classifier:v2"


class Replicas:
    """Two operator processes sharing one Lease, with the chart's RBAC (`kubeconfig`)."""

    def __init__(self, kubeconfig: Path, logs: Path, *args: str) -> None:
        flags = ("--workers", "4", "--resync-seconds", "20", *args)
        self.processes = {
            name: Operator(kubeconfig, logs / f"operator-{name}.log", *flags, env={"POD_NAME": name})
            for name in ("chaos-a", "chaos-b")
        }
        self.kills = 0

    def start(self) -> None:
        for process in self.processes.values():
            process.log.unlink(missing_ok=True)
            process.start()

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()

    def holder(self, client: Client) -> str:
        lease = client.get("coordination.k8s.io/v1", "Lease", OPERATOR_NAMESPACE, LEASE) or {}
        holder: str = (lease.get("spec") or {}).get("holderIdentity") or ""
        return holder

    def kill_leader(self, client: Client) -> str:
        """SIGKILL whichever replica holds the Lease, then start it again; its name."""
        holder = self.holder(client)
        name = holder.split("_")[0]
        process = self.processes.get(name)
        if process is None:
            raise AssertionError(f"the Lease is held by {holder!r}, none of {sorted(self.processes)}")
        process.kill()
        self.kills += 1
        process.start()
        return name

    def tracebacks(self) -> list[str]:
        return [t for process in self.processes.values() for t in process.tracebacks()]


# What strikes in a trial: the leading operator, or a control-plane process (LocalCluster.restart_component),
# and within how many seconds of the update. The walk (two steps of 2 s on kwok pods) takes about 5 s: a kill
# of the operator after it tests the quiet case too; the restarts strike while the canary is recorded.
WINDOWS = {"operator": (0.0, 7.0), "kube-apiserver": (0.5, 4.0), "etcd": (0.5, 4.0)}
FAULTS = tuple(WINDOWS)


def fault_action(fault: str, replicas: Replicas, client: Client, local: LocalCluster | None) -> Callable[[], str]:
    """The act of FAULT, returning what was done."""
    if fault == "operator":
        return lambda: f"leader {replicas.kill_leader(client)} SIGKILLed"
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}: one of {', '.join(FAULTS)}")
    if local is None:
        raise ValueError(f"restarting {fault} needs the local cluster")
    return lambda: f"{fault} SIGKILLed, healthy again after {local.restart_component(fault):.1f}s"


@dataclass
class Trial:
    index: int
    fault: str
    delay: float  # seconds after the update at which the fault struck
    at_fault: str  # where the rollout was then
    done: str = ""  # what the fault did
    converged: bool = False
    seconds: float = 0.0  # from the fault to converged
    problems: list[str] = field(default_factory=list)
    lost_events: list[str] = field(default_factory=list)  # transitions recorded, their Event not posted

    def line(self) -> str:
        outcome = f"converged {self.seconds:.1f}s after the fault" if self.converged else "NOT converged"
        lost = f", events not posted: {self.lost_events}" if self.lost_events else ""
        problems = f": {'; '.join(self.problems)}" if self.problems else ""
        return (
            f"trial {self.index} ({self.fault}), {self.delay:.1f}s into the walk ({self.at_fault}): "
            f"{self.done or 'no fault'}; {outcome}{lost}{problems}"
        )


def _wait(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Whether check() came true within timeout (an API error counts as not yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except Exception:  # the API server answering slowly is a value like any other
            pass
        time.sleep(interval)
    return False


def _where(md: dict[str, Any] | None) -> str:
    status = (md or {}).get("status") or {}
    canary = status.get("canary")
    if canary:
        return f"canary step {canary.get('step')} at {canary.get('weight')}%"
    return f"no canary, stable {(status.get('stable') or {}).get('bento')}"


def problems_left(client: Client, namespace: str, name: str, image: str) -> list[str]:
    """What is still wrong; empty once the rollout has converged with exactly the expected children."""
    md = client.get(API_VERSION, KIND, namespace, name)
    if md is None:
        return ["the ModelDeployment is gone"]
    status = md.get("status") or {}
    problems = []
    if status.get("observedGeneration") != md["metadata"]["generation"]:
        problems.append("generation not observed")
    if "canary" in status:
        problems.append(f"a canary ({_where(md)})")
    ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
    if not ready or ready[0]["status"] != "True":
        problems.append("not Ready")
    selector = {"modeldeploy.dev/name": name}
    listed = client.list("apps/v1", "Deployment", namespace, selector)
    deployments = [d for d in listed if not d["metadata"].get("deletionTimestamp")]
    if [d["metadata"]["name"] for d in deployments] != [name]:
        problems.append(f"deployments {[d['metadata']['name'] for d in deployments]}")
    elif deployments[0]["spec"]["template"]["spec"]["containers"][0]["image"] != image:
        problems.append("the Deployment runs another image")
    services = [s["metadata"]["name"] for s in client.list("v1", "Service", namespace, selector)]
    if services != [name]:
        problems.append(f"services {services}")
    return problems


def operator_events(client: Client, namespace: str, name: str) -> list[dict[str, Any]]:
    found = client.request("GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events")
    return [
        e
        for e in found.get("items", [])
        if e.get("reportingController") == "modeldeploy.dev/operator" and e["regarding"]["name"] == name
    ]


def run_trial(
    cluster: Cluster,
    client: Client,
    *,
    namespace: str,
    index: int,
    rng: random.Random,
    fault: str,
    act: Callable[[], str],
) -> Trial:
    name = f"chaos-{index}"
    cluster.apply(sample(name, namespace, replicas=4, rollout={"steps": STEPS}, bento={"image": V1}))
    if not _wait(lambda: not problems_left(client, namespace, name, V1), timeout=90):
        problems = problems_left(client, namespace, name, V1)
        return Trial(index, fault, 0.0, "v1", problems=["v1 never Ready: " + "; ".join(problems)])
    cluster.apply(sample(name, namespace, replicas=4, rollout={"steps": STEPS}, bento={"image": V2}))
    updated = time.monotonic()
    delay = rng.uniform(*WINDOWS[fault])
    time.sleep(max(0.0, updated + delay - time.monotonic()))
    trial = Trial(index, fault, delay, _where(client.get(API_VERSION, KIND, namespace, name)))
    struck = time.monotonic()
    trial.done = act()
    if not _wait(lambda: not problems_left(client, namespace, name, V2), timeout=150):
        trial.problems = problems_left(client, namespace, name, V2)
        return trial
    trial.converged = True
    trial.seconds = time.monotonic() - struck
    # The events of the last transition follow its status write: give them a moment.
    _wait(lambda: any(e["reason"] == "Promoted" for e in operator_events(client, namespace, name)), timeout=5)
    events = operator_events(client, namespace, name)
    posted = Counter((e["reason"], e.get("note", "")) for e in events)
    duplicated = [f"{reason} x{count}" for (reason, _), count in posted.items() if count > 1]
    if duplicated:
        trial.converged = False
        trial.problems.append(f"events posted twice: {duplicated}")
    reasons = {e["reason"] for e in events}
    trial.lost_events = [reason for reason in ("CanaryStarted", "Promoted") if reason not in reasons]
    return trial


@dataclass
class Figures:
    trials: list[Trial]

    @property
    def converged(self) -> int:
        return sum(1 for t in self.trials if t.converged)

    @property
    def worst(self) -> float:
        return max((t.seconds for t in self.trials if t.converged), default=0.0)

    @property
    def mid_walk(self) -> int:
        """Trials whose fault came while a canary was in the status (not before it was recorded, nor after)."""
        return sum(1 for t in self.trials if t.at_fault.startswith("canary"))

    def line(self) -> str:
        faults = "/".join(sorted({t.fault for t in self.trials})) or "none"
        return (
            f"{faults}: trials {len(self.trials)} ({self.mid_walk} struck mid-walk), converged {self.converged}, "
            f"worst time to converge after the fault {self.worst:.1f}s"
        )
