"""The cluster's certificates (openssl CLI) and kubeconfigs.

Kept across down/up in <dir>/pki: nothing in them depends on the (changing) ports, and
generating them takes a noticeable part of a warm start.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from localcluster.process import ClusterError

# Bumped when ensure_pki issues different files: an older pki/ is recreated.
PKI_LAYOUT = "3"
CLIENT = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature", "extendedKeyUsage=clientAuth"]


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args)} failed:\n{result.stderr.strip()}")


def issue_cert(pki: Path, name: str, subject: str, extensions: Sequence[str], ca: str | None = "ca") -> None:
    """Create <name>.key (EC P-256, fast to generate) and <name>.crt signed by <ca>."""
    key, crt, csr, cfg = (pki / f"{name}.{ext}" for ext in ("key", "crt", "csr", "cnf"))
    cfg.write_text("[ext]\n" + "\n".join(extensions) + "\n")
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    signer = (
        ["-CA", str(pki / f"{ca}.crt"), "-CAkey", str(pki / f"{ca}.key"), "-CAcreateserial"]
        if ca
        else ["-signkey", str(key)]
    )
    _openssl(
        "x509", "-req", "-in", str(csr), *signer, "-days", "3650", "-sha256",
        "-extfile", str(cfg), "-extensions", "ext", "-out", str(crt),
    )  # fmt: skip
    csr.unlink()
    cfg.unlink()
    key.chmod(0o600)


def server_extensions(sans: Sequence[str]) -> list[str]:
    return [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=serverAuth",
        "subjectAltName=" + ",".join(sans),
    ]


def ensure_pki(pki: Path, *, kubernetes_service_ip: str, node_name: str, node_ip: str) -> None:
    """CA, apiserver serving cert, client certs (control plane, admin, kubelet) and SA keys."""
    if (pki / "complete").exists() and (pki / "complete").read_text() == PKI_LAYOUT:
        return
    shutil.rmtree(pki, ignore_errors=True)
    pki.mkdir(parents=True)
    ca_ext = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"]
    issue_cert(pki, "ca", "/CN=modeldeploy-local-ca", [*ca_ext, "subjectKeyIdentifier=hash"], ca=None)
    sans = [
        "DNS:localhost",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
        "IP:127.0.0.1",
        f"IP:{kubernetes_service_ip}",
        # Pods reach the API server through the relay on the node's bridge address.
        f"IP:{node_ip}",
    ]
    issue_cert(pki, "apiserver", "/CN=kube-apiserver", server_extensions(sans))
    # system:masters is bound to cluster-admin by the bootstrap RBAC policy.
    issue_cert(pki, "admin", "/O=system:masters/CN=kubernetes-admin", CLIENT)
    # The control-plane components use the identities the bootstrap RBAC roles are written for,
    # as on a kubeadm cluster.
    issue_cert(pki, "controller-manager", "/CN=system:kube-controller-manager", CLIENT)
    issue_cert(pki, "scheduler", "/CN=system:kube-scheduler", CLIENT)
    issue_cert(pki, "kube-proxy", "/CN=system:kube-proxy", CLIENT)
    issue_cert(pki, "coredns", "/CN=system:coredns", CLIENT)
    # The kubelet: a node identity for the Node authorizer and NodeRestriction, a serving
    # certificate for its own port (logs, exec, port-forward), and the API server's client
    # certificate for that port (the kubelet authorizes it through the API server's webhook).
    issue_cert(pki, "kubelet", f"/O=system:nodes/CN=system:node:{node_name}", CLIENT)
    issue_cert(pki, "kubelet-serving", f"/CN={node_name}", server_extensions([f"DNS:{node_name}", f"IP:{node_ip}"]))
    issue_cert(pki, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", CLIENT)
    # Aggregation layer (front proxy): a separate CA, as kubeadm does, and the client the API
    # server presents to aggregated API servers. Also silences the "missing
    # requestheader-client-ca-file" errors of kcm and scheduler.
    issue_cert(pki, "front-proxy-ca", "/CN=modeldeploy-local-front-proxy-ca", ca_ext, ca=None)
    issue_cert(pki, "front-proxy-client", "/CN=front-proxy-client", CLIENT, ca="front-proxy-ca")
    # Service-account tokens are signed with RSA, like kubeadm does.
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(pki / "sa.key"))
    _openssl("pkey", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    (pki / "sa.key").chmod(0o600)
    (pki / "complete").write_text(PKI_LAYOUT)


def kubeconfig(server: str, pki: Path, user: str, cert: str, embed: bool) -> str:
    def field(kind: str, path: Path) -> str:
        if embed:
            return f"{kind}-data: {base64.b64encode(path.read_bytes()).decode()}"
        return f"{kind}: {path}"

    return f"""apiVersion: v1
kind: Config
clusters:
- name: modeldeploy-local
  cluster:
    server: {server}
    {field("certificate-authority", pki / "ca.crt")}
users:
- name: {user}
  user:
    {field("client-certificate", pki / f"{cert}.crt")}
    {field("client-key", pki / f"{cert}.key")}
contexts:
- name: modeldeploy-local
  context:
    cluster: modeldeploy-local
    user: {user}
current-context: modeldeploy-local
"""


def private_ca(directory: Path, name: str = "store-ca") -> Path:
    """A CA of this machine's own (kept in DIRECTORY, made once): for test servers that must be
    reached over https, such as the model-store tests' https store. Returns the certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / f"{name}.crt").exists():
        ca_ext = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"]
        issue_cert(directory, name, f"/CN=modeldeploy-local-{name}", ca_ext, ca=None)
    return directory / f"{name}.crt"


def server_certificate(ca_certificate: Path, out: Path, dns_names: Sequence[str]) -> tuple[Path, Path]:
    """A serving certificate for DNS_NAMES signed by the CA next to CA_CERTIFICATE: (cert, key)."""
    out.mkdir(parents=True, exist_ok=True)
    ca = ca_certificate.stem
    for suffix in ("crt", "key"):
        shutil.copyfile(ca_certificate.with_suffix(f".{suffix}"), out / f"{ca}.{suffix}")
    issue_cert(out, "server", f"/CN={dns_names[0]}", server_extensions([f"DNS:{n}" for n in dns_names]), ca=ca)
    (out / f"{ca}.key").unlink()
    return out / "server.crt", out / "server.key"
