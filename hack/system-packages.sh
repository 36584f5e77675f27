#!/usr/bin/env bash
# Install the Debian packages the local cluster, its real node and the image builds need, when
# they are missing (`make system-packages`; `make setup`, `make up` and `make test` run it).
# Runs apt-get (as root, or through sudo) only when something is missing.
set -euo pipefail

# command or file that proves the package is there -> package
declare -A NEED=(
    [openssl]=openssl                       # the local cluster's certificates
    [/usr/lib/cni/bridge]=containernetworking-plugins  # the real node's pod network
    [iptables]=iptables                     # kube-proxy and the node's bridge rules
    [nft]=nftables                          # teardown of the tables iptables-nft leaves
    [ip]=iproute2                           # the node's bridge and routes
    [conntrack]=conntrack                   # kube-proxy's stale-connection cleanup
    [mmdebstrap]=mmdebstrap                 # image root filesystems from Debian packages
    [buildah]=buildah                       # image builds (bentoml containerize --backend buildah)
    [fuse-overlayfs]=fuse-overlayfs         # buildah's overlay storage
    [skopeo]=skopeo                         # image inspection in the local registry
    [/usr/include/seccomp.h]=libseccomp-dev # runc is built with seccomp support
    [gcc]=gcc                               # runc (cgo) and the pause binary
    [tmux]=tmux                             # the terminal tests of `modeldeploy status --watch`
)

missing=()
for probe in "${!NEED[@]}"; do
    if [[ "$probe" == /* ]]; then
        [[ -e "$probe" ]] || missing+=("${NEED[$probe]}")
    else
        command -v "$probe" >/dev/null 2>&1 || missing+=("${NEED[$probe]}")
    fi
done
if ((${#missing[@]} == 0)); then
    exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "==> installing Debian packages: ${missing[*]}" >&2
sudo=""
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "system-packages: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
