#!/usr/bin/env bash
# Build the binaries of the local development cluster from upstream Go modules.
#
# Nothing here downloads a prebuilt binary: everything comes from the Go
# module proxy and is compiled locally, then cached by version in
#   ${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}/bin/<name>-<version>
# so that a second run (or another checkout) only checks that files exist.
#
# Usage:
#   hack/cluster/build.sh [component ...]    build what is missing (default: all)
#   hack/cluster/build.sh --gateway-api-crds print the Gateway API standard CRD dir
#   hack/cluster/build.sh --list             print the cached file of each binary
#
# Components: kubernetes (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, and the node's kubelet and kube-proxy), etcd, kwok,
# helm, gateway-api (CRD YAML only), and for the real node: containerd
# (containerd, containerd-shim-runc-v2, ctr), runc, crictl, registry (distribution),
# coredns (cluster DNS), minio (the S3 store of the model-store tests); prometheus, traefik
# (the Gateway API), keda (operator and adapter), metrics-server.
#
# Environment:
#   MODELDEPLOY_CACHE        cache root (default ~/.cache/modeldeploy)
#   MODELDEPLOY_BUILD_JOBS   `go build -p` (default: number of CPUs)
#   MODELDEPLOY_BUILD_QUIET  set to 1 to hide per-package progress
#   MODELDEPLOY_KEEP_GOCACHE set to 1 to keep the Go build cache (~6 GB after
#                            a full build) for faster rebuilds after a bump
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/cluster/versions.env disable=SC1091
source "$HERE/versions.env"

CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
BIN="$CACHE/bin"
WORK="$CACHE/build"
JOBS="${MODELDEPLOY_BUILD_JOBS:-$(nproc)}"

# The wrapper modules below are ours, so our settings apply: resolve missing
# requirements (-mod=mod), ignore any go.work above the cache, static binaries
# like upstream's release builds, no VCS stamping (the cache is not a repo).
export GOFLAGS="-mod=mod -buildvcs=false"
export GOWORK=off
export CGO_ENABLED=0
# A private build cache: a full build leaves ~6 GB of compiled packages that
# are useless once the binaries exist, and this one can be deleted without
# touching the user's own Go build cache (see cleanup at the end of main).
export GOCACHE="$CACHE/go-build"
# Every build: -trimpath like upstream's releases; no DWARF from the compiler either, as the
# linker's -w drops it anyway (5-15% less compile time on etcd's build).
BUILD_FLAGS=(-p "$JOBS" -trimpath -gcflags=all=-dwarf=false)

ALL_COMPONENTS=(kubernetes etcd kwok helm gateway-api prometheus-operator-crds containerd runc crictl registry coredns minio prometheus traefik keda metrics-server kube-score kstatus)
KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }

# `go build -v` prints one line per compiled package: count those and show
# every 100th with a running total, pass every other line (errors) through.
progress() {
    local label="$1" total="${2:-?}"
    if [[ "${MODELDEPLOY_BUILD_QUIET:-0}" == 1 ]]; then
        grep -vE '^[A-Za-z0-9_.~+/-]+$' || true
        return
    fi
    awk -v label="$label" -v total="$total" -v start="$(date +%s)" '
        /^[A-Za-z0-9_.~+\/-]+$/ {
            n++
            if (n % 100 == 0) {
                printf "    [%s] %d/%s packages compiled, %ds (%s)\n", label, n, total, systime() - start, $0
                fflush()
            }
            next
        }
        { print; fflush() }
        END { printf "    [%s] %d packages compiled in %ds\n", label, n, systime() - start }
    ' >&2
}

# Pass output on to stderr (stdout is reserved for --list and the CRD dir);
# unlike a bare grep/cat in a pipeline, no output is not a failure.
to_stderr() { grep -v '^go: finding' >&2 || true; }

# JSON field of `go mod download -json`; the command exits non-zero when the
# module needs a newer go than ours (gateway-api v1.7.0 wants go 1.27) even
# though the zip and go.mod were downloaded, so the caller decides what matters.
mod_field() {
    local module="$1" field="$2"
    (
        cd "$WORK" || exit
        go mod download -json "$module" 2>/dev/null || : # see above
    ) |
        python3 -c '
import json, sys
try:
    print(json.load(sys.stdin).get(sys.argv[1], ""))
except ValueError:  # no answer at all (no network?): the caller reports it
    print("")
' "$field"
}

all_present() {
    local f
    for f in "$@"; do [[ -x "$f" ]] || return 1; done
}

# Move freshly built binaries into the cache under versioned names; the
# rename is atomic, so an interrupted build never leaves a half-written binary.
install_bin() {
    local src="$1" name="$2" version="$3"
    mv -f "$src" "$BIN/$name-$version"
    log "installed $BIN/$name-$version ($(du -h "$BIN/$name-$version" | cut -f1))"
}

# Downloads run ahead of the compiler: while one component compiles, a background pass
# (PREFETCH=1) resolves the modules of the next ones and fetches them into the module cache, each
# wrapper module in its own scratch directory; the compile of each then finds them there.
prefetching() { [[ "${PREFETCH:-0}" == 1 ]]; }
wrapper_dir() { if prefetching; then echo "$WORK/prefetch/$1"; else echo "$WORK/$1"; fi; }

# Only components that download Go modules take part (not the CRD extractions, not kstatus).
prefetch() {
    local parent="$1" c
    shift
    for c in "$@"; do
        kill -0 "$parent" 2>/dev/null || break # the build stopped: so does this
        case "$c" in
            gateway-api|prometheus-operator-crds|kstatus) continue ;;
        esac
        (PREFETCH=1 build_component "$c") >/dev/null 2>&1 || true
    done
    rm -rf "$WORK/prefetch"
}

# TAGS PKG@VERSION...: what `go install` of them would download, downloaded (-n: nothing compiled).
download_for_install() {
    local tags="$1"
    shift
    (cd "$WORK" && GOFLAGS=-buildvcs=false go install -n -tags "$tags" "$@" >/dev/null 2>&1) || true
}

build_kubernetes() {
    local v="$KUBERNETES_VERSION"
    local staging_v="v0.${v#v1.}" # v1.37.2 -> v0.37.2 (staging modules)
    local targets=() name
    for name in "${KUBE_BINARIES[@]}"; do targets+=("$BIN/$name-$v"); done
    if all_present "${targets[@]}"; then log "kubernetes $v: cached"; return; fi

    local start=$SECONDS dir
    dir="$(wrapper_dir "kubernetes-$v")"
    log "kubernetes $v: preparing wrapper module in $dir"
    rm -rf "$dir" && mkdir -p "$dir/out"

    local gomod
    gomod="$(mod_field "k8s.io/kubernetes@$v" GoMod)"
    [[ -s "$gomod" ]] || die "cannot download k8s.io/kubernetes@$v from the module proxy"

    # k8s.io/kubernetes requires its staging modules (k8s.io/api, client-go,
    # ...) at v0.0.0 and replaces them with ./staging/src/... paths. Replace
    # directives of a dependency are ignored, so pin each published staging
    # module to the matching v0.X.Y here. The list comes from the go.mod of
    # this very version, so new staging modules are picked up automatically.
    local staging
    staging="$(sed -nE 's#^[[:space:]]*(k8s\.io/[^[:space:]]+)[[:space:]]+=>[[:space:]]+\./staging/.*#\1#p' "$gomod")"
    [[ -n "$staging" ]] || die "no staging modules found in $gomod"
    local go_directive godebug
    go_directive="$(sed -nE 's/^go ([0-9.]+)$/\1/p' "$gomod")"
    # godebug settings (e.g. `godebug default=go1.26`) only take effect in the
    # main module, which is ours now, so carry them over verbatim.
    godebug="$(awk '/^godebug \(/{b=1} b{print} b&&/^\)/{b=0} /^godebug [^(]/{print}' "$gomod")"

    {
        echo "// Generated by hack/cluster/build.sh: builds the upstream main packages"
        echo "// of k8s.io/kubernetes $v (no local sources)."
        echo "module modeldeploy.local/kubernetes-build"
        echo
        echo "go ${go_directive:-1.26.0}"
        echo
        [[ -n "$godebug" ]] && printf '%s\n\n' "$godebug"
        echo "require k8s.io/kubernetes $v"
        echo
        echo "replace ("
        local m
        for m in $staging; do printf '\t%s => %s %s\n' "$m" "$m" "$staging_v"; done
        echo ")"
        echo
        # tool directives keep `go mod tidy` from dropping the requirements
        # of the upstream main packages, which no Go file of ours imports.
        echo "tool ("
        for name in "${KUBE_BINARIES[@]}"; do printf '\tk8s.io/kubernetes/cmd/%s\n' "$name"; done
        echo ")"
    } >"$dir/go.mod"

    log "kubernetes $v: resolving modules (go mod tidy; the first run downloads ~300 modules)"
    (cd "$dir" && go mod tidy 2>&1 | to_stderr) || die "go mod tidy failed in $dir"
    prefetching && return

    # The same version stamping as upstream's hack/lib/version.sh, for both the
    # server side (/version, --version) and client-go (kubectl version).
    local minor="${v#v1.}" build_date
    minor="${minor%%.*}"
    build_date="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["Time"])' \
        "$(mod_field "k8s.io/kubernetes@$v" Info)" 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)"
    local ldflags="-s -w" pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date -X $pkg.gitCommit="
    done

    local pkgs=()
    for name in "${KUBE_BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$name"); done
    local total
    total="$(cd "$dir" && go list -deps "${pkgs[@]}" 2>/dev/null | wc -l || echo '?')"
    log "kubernetes $v: compiling ${KUBE_BINARIES[*]} (-p $JOBS, ~$total packages; ~7 min on 2 cores)"
    # One `go build` for all four binaries: shared packages compile once.
    (cd "$dir" && go build -v "${BUILD_FLAGS[@]}" -ldflags "$ldflags" -o out/ "${pkgs[@]}" 2>&1) |
        progress kubernetes "$total" || die "kubernetes build failed"
    for name in "${KUBE_BINARIES[@]}"; do install_bin "$dir/out/$name" "$name" "$v"; done
    log "kubernetes $v: done in $((SECONDS - start))s"
}

build_etcd() {
    local v="$ETCD_VERSION"
    if all_present "$BIN/etcd-$v"; then log "etcd $v: cached"; return; fi
    local start=$SECONDS dir
    dir="$(wrapper_dir "etcd-$v")"
    log "etcd $v: preparing wrapper module in $dir"
    rm -rf "$dir" && mkdir -p "$dir"
    # go.etcd.io/etcd/server/v3's go.mod has replace directives (../api, ...),
    # so `go install ...@version` refuses it; a wrapper module works and pins
    # the sibling modules to the same release.
    local m
    {
        echo "// Generated by hack/cluster/build.sh: etcd $v from go.etcd.io/etcd/server/v3."
        echo "module modeldeploy.local/etcd-build"
        echo
        echo "go 1.26.0"
        echo
        echo "require go.etcd.io/etcd/server/v3 $v"
        echo
        echo "replace ("
        for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do
            printf '\tgo.etcd.io/etcd/%s => go.etcd.io/etcd/%s %s\n' "$m" "$m" "$v"
        done
        echo ")"
    } >"$dir/go.mod"
    # The same main as upstream's go.etcd.io/etcd/v3 (the repo root module).
    cat >"$dir/main.go" <<'EOF'
// Generated by hack/cluster/build.sh.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
EOF
    (cd "$dir" && go mod tidy 2>&1 | to_stderr) || die "go mod tidy failed in $dir"
    prefetching && return
    log "etcd $v: compiling"
    (cd "$dir" && go build -v "${BUILD_FLAGS[@]}" -ldflags "-s -w" -o "$dir/etcd" . 2>&1) |
        progress etcd || die "etcd build failed"
    install_bin "$dir/etcd" etcd "$v"
    log "etcd $v: done in $((SECONDS - start))s"
}

# Modules without replace directives: plain `go install module/cmd@version`.
go_install() {
    local name="$1" v="$2" pkg="$3" ldflags="$4" tags="${5:-}"
    if all_present "$BIN/$name-$v"; then log "$name $v: cached"; return; fi
    if prefetching; then download_for_install "$tags" "$pkg@$v"; return; fi
    local start=$SECONDS gobin="$WORK/$name-$v"
    rm -rf "$gobin" && mkdir -p "$gobin"
    log "$name $v: go install $pkg@$v"
    (cd "$WORK" && GOBIN="$gobin" GOFLAGS=-buildvcs=false \
        go install -v "${BUILD_FLAGS[@]}" -tags "$tags" -ldflags "$ldflags" "$pkg@$v" 2>&1) |
        progress "$name" || die "$name build failed"
    install_bin "$gobin/$name" "$name" "$v"
    log "$name $v: done in $((SECONDS - start))s"
}

kwok_stages_dir() { echo "$CACHE/kwok/$KWOK_VERSION/stages"; }

build_kwok() {
    go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok \
        "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
    prefetching && return
    # Unlike kwokctl, the kwok binary has no built-in stages: without a
    # Stage config it neither marks nodes Ready nor pods Running. Keep the
    # upstream "fast" stages of this very version next to the binary; the
    # lease heartbeat matches kwokctl's default (--node-lease-duration-seconds).
    local dest
    dest="$(kwok_stages_dir)"
    if compgen -G "$dest/*.yaml" >/dev/null; then return; fi
    local src
    src="$(mod_field "sigs.k8s.io/kwok@$KWOK_VERSION" Dir)/kustomize/stage"
    [[ -d "$src" ]] || die "kwok module has no kustomize/stage directory ($src)"
    rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
    cp "$src/node/fast/node-initialize.yaml" \
        "$src/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
        "$src/pod/fast/pod-ready.yaml" \
        "$src/pod/fast/pod-complete.yaml" \
        "$src/pod/fast/pod-delete.yaml" "$dest.tmp/"
    chmod 644 "$dest.tmp"/*.yaml # files in the module cache are read-only
    rm -rf "$dest" && mv "$dest.tmp" "$dest"
    log "kwok $KWOK_VERSION: stages in $dest"
}

# containerd v2 has no replace directives: `go install` of its three commands
# (one module version, so shared packages compile once), static like upstream's
# release builds, without the btrfs snapshotter (needs btrfs headers).
build_containerd() {
    local v="$CONTAINERD_VERSION" name
    local names=(containerd containerd-shim-runc-v2 ctr) targets=()
    for name in "${names[@]}"; do targets+=("$BIN/$name-$v"); done
    if all_present "${targets[@]}"; then log "containerd $v: cached"; return; fi
    local start=$SECONDS gobin="$WORK/containerd-$v" pkgs=()
    for name in "${names[@]}"; do pkgs+=("github.com/containerd/containerd/v2/cmd/$name@$v"); done
    # Before the rm below: the compile may have caught up and be using $gobin.
    if prefetching; then download_for_install "no_btrfs urfave_cli_no_docs" "${pkgs[@]}"; return; fi
    rm -rf "$gobin" && mkdir -p "$gobin"
    log "containerd $v: go install ${names[*]} (~1 min on 2 cores)"
    local ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$v"
    ldflags+=" -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2"
    (cd "$WORK" && GOBIN="$gobin" GOFLAGS=-buildvcs=false \
        go install -v "${BUILD_FLAGS[@]}" -tags "no_btrfs urfave_cli_no_docs" -ldflags "$ldflags" "${pkgs[@]}" 2>&1) |
        progress containerd || die "containerd build failed"
    for name in "${names[@]}"; do install_bin "$gobin/$name" "$name" "$v"; done
    log "containerd $v: done in $((SECONDS - start))s"
}

# runc needs cgo for libseccomp (Debian's libseccomp-dev), as upstream builds it.
build_runc() {
    local v="$RUNC_VERSION"
    if all_present "$BIN/runc-$v"; then log "runc $v: cached"; return; fi
    [[ -e /usr/include/seccomp.h ]] || die "runc needs libseccomp-dev (apt-get install libseccomp-dev; make system-packages)"
    CGO_ENABLED=1 go_install runc "$v" github.com/opencontainers/runc "-s -w -X main.version=${v#v}" seccomp
}

build_registry() {
    go_install registry "$DISTRIBUTION_VERSION" github.com/distribution/distribution/v3/cmd/registry \
        "-s -w -X github.com/distribution/distribution/v3/version.version=$DISTRIBUTION_VERSION"
}

# crictl talks CRI to containerd: the node's teardown removes every pod sandbox through it, so
# that CNI releases addresses and interfaces the way a kubelet would.
build_crictl() {
    go_install crictl "$CRI_TOOLS_VERSION" sigs.k8s.io/cri-tools/cmd/crictl \
        "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRI_TOOLS_VERSION#v}"
}

# Cluster DNS for the real node's pods, serving only the cluster's own names (no forwarding).
build_coredns() {
    go_install coredns "$COREDNS_VERSION" github.com/coredns/coredns \
        "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
}

# An S3-compatible object store for the model-store tests (bento archives fetched from s3://).
# MinIO publishes no module versions, only this pseudo-version (what @latest resolves to).
build_minio() {
    go_install minio "$MINIO_VERSION" github.com/minio/minio \
        "-s -w -X github.com/minio/minio/cmd.Version=$MINIO_VERSION -X github.com/minio/minio/cmd.ReleaseTag=$MINIO_VERSION"
}

# A module whose go.mod has replace or exclude directives cannot be `go install`ed at a version:
# a wrapper module requires it, carries those directives over verbatim (replace directives only
# apply in the main module), and builds its main packages, listed as tool directives so that
# `go mod tidy` keeps their requirements. NAME VERSION MODULE LDFLAGS PACKAGE...; each binary is
# installed as NAME-VERSION when its package's last path element is NAME, else as
# NAME-<last element>-VERSION (keda's operator and adapter: keda-operator, keda-adapter).
build_wrapped() {
    local name="$1" v="$2" module="$3" ldflags="$4"
    shift 4
    local pkgs=("$@") targets=() pkg
    installed() { if [[ "${1##*/}" == "$name" ]]; then echo "$name"; else echo "$name-${1##*/}"; fi; }
    for pkg in "${pkgs[@]}"; do targets+=("$BIN/$(installed "$pkg")-$v"); done
    if all_present "${targets[@]}"; then log "$name $v: cached"; return; fi
    local start=$SECONDS dir
    dir="$(wrapper_dir "$name-$v")"
    log "$name $v: preparing wrapper module in $dir"
    rm -rf "$dir" && mkdir -p "$dir/out"
    local gomod
    gomod="$(mod_field "$module@$v" GoMod)"
    [[ -s "$gomod" ]] || die "cannot download $module@$v from the module proxy"
    {
        echo "// Generated by hack/cluster/build.sh: builds ${pkgs[*]} of $module $v."
        echo "module modeldeploy.local/$name-build"
        echo
        echo "go $(sed -nE 's/^go ([0-9.]+)$/\1/p' "$gomod")"
        echo
        echo "require $module $v"
        echo
        # replace/exclude directives, one-line and block forms, minus replaces by local paths.
        awk '/^(replace|exclude) \(/{b=1; print; next} b{print} b&&/^\)/{b=0; next} /^(replace|exclude) [^(]/{print}' "$gomod" |
            grep -vE '=>[[:space:]]+\.\.?/'
        echo
        echo "tool ("
        for pkg in "${pkgs[@]}"; do printf '\t%s\n' "$pkg"; done
        echo ")"
    } >"$dir/go.mod"
    log "$name $v: resolving modules (go mod tidy)"
    (cd "$dir" && go mod tidy 2>&1 | to_stderr) || die "go mod tidy failed in $dir"
    prefetching && return
    log "$name $v: compiling ${pkgs[*]##*/}"
    (cd "$dir" && go build -v "${BUILD_FLAGS[@]}" -ldflags "$ldflags" -o out/ "${pkgs[@]}" 2>&1) |
        progress "$name" || die "$name build failed"
    for pkg in "${pkgs[@]}"; do install_bin "$dir/out/${pkg##*/}" "$(installed "$pkg")" "$v"; done
    log "$name $v: done in $((SECONDS - start))s"
}

# Prometheus 3 (module versions v0.3xx.y) with only the Kubernetes and file service discovery
# (upstream's build tags remove_all_sd + enable_kubernetes_sd drop the cloud SDKs, half the
# build); its web UI needs assets built with npm (tag builtinassets), so only its API is
# served: that is all the tests and the operator's analysis use.
build_prometheus() {
    local n="${PROMETHEUS_VERSION#v0.}"
    n="${n%%.*}"
    local release="${n:0:1}.${n:1}.${PROMETHEUS_VERSION##*.}" # module v0.316.0 is Prometheus 3.16.0
    go_install prometheus "$PROMETHEUS_VERSION" github.com/prometheus/prometheus/cmd/prometheus \
        "-s -w -X github.com/prometheus/common/version.Version=$release -X github.com/prometheus/common/version.Branch=release" \
        "remove_all_sd,enable_kubernetes_sd"
}

# Traefik v3 serves the Gateway API (--providers.kubernetesgateway): the local cluster's gateway.
build_traefik() {
    build_wrapped traefik "$TRAEFIK_VERSION" github.com/traefik/traefik/v3 \
        "-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" \
        github.com/traefik/traefik/v3/cmd/traefik
}

# KEDA: its operator and its metrics API server (the adapter), for request-based autoscaling.
build_keda() {
    build_wrapped keda "$KEDA_VERSION" github.com/kedacore/keda/v2 \
        "-s -w -X github.com/kedacore/keda/v2/version.Version=$KEDA_VERSION" \
        github.com/kedacore/keda/v2/cmd/operator github.com/kedacore/keda/v2/cmd/adapter
}

# metrics-server: the resource metrics API (cpu/memory HPAs), from the kubelet's /metrics/resource.
build_metrics_server() {
    go_install metrics-server "$METRICS_SERVER_VERSION" sigs.k8s.io/metrics-server/cmd/metrics-server \
        "-s -w -X sigs.k8s.io/metrics-server/pkg/version.gitVersion=$METRICS_SERVER_VERSION"
}

# kube-score: the static checks the production-readiness tests run on rendered objects and the chart.
build_kube_score() {
    go_install kube-score "$KUBE_SCORE_VERSION" github.com/zegl/kube-score/cmd/kube-score \
        "-s -w -X main.version=${KUBE_SCORE_VERSION#v}"
}

# Our own small Go program (hack/kstatus): how the kstatus library reads an object (the GitOps
# readiness tests). Cached under a digest of its sources, as it has no version of its own.
kstatus_version() { cat "$HERE/../kstatus/"{go.mod,go.sum,main.go} | sha256sum | cut -c1-12; }

build_kstatus() {
    local v
    v="$(kstatus_version)"
    if all_present "$BIN/kstatus-$v"; then log "kstatus $v: cached"; return; fi
    log "kstatus $v: go build hack/kstatus"
    (cd "$HERE/../kstatus" && GOFLAGS=-mod=mod go build "${BUILD_FLAGS[@]}" -ldflags "-s -w" -o "$WORK/kstatus-$v" . 2>&1) |
        to_stderr || die "kstatus build failed"
    install_bin "$WORK/kstatus-$v" kstatus "$v"
}

build_helm() {
    go_install helm "$HELM_VERSION" helm.sh/helm/v4/cmd/helm \
        "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
}

gateway_api_dir() { echo "$CACHE/gateway-api/$GATEWAY_API_VERSION/standard"; }

# Only the CRD manifests are needed, so take config/crd/standard/*.yaml out of
# the module zip rather than building anything (v1.7.0's go.mod asks for go
# 1.27, which `go mod download` reports as an error after downloading the zip).
build_gateway_api() {
    local v="$GATEWAY_API_VERSION" dest
    dest="$(gateway_api_dir)"
    if compgen -G "$dest/*.yaml" >/dev/null; then log "gateway-api $v CRDs: cached"; return; fi
    log "gateway-api $v: extracting config/crd/standard from the module zip"
    local zip
    zip="$(mod_field "sigs.k8s.io/gateway-api@$v" Zip)"
    [[ -s "$zip" ]] || die "cannot download sigs.k8s.io/gateway-api@$v from the module proxy"
    rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
    python3 - "$zip" "sigs.k8s.io/gateway-api@$v/config/crd/standard/" "$dest.tmp" <<'EOF'
import sys
import zipfile
from pathlib import Path

archive, prefix, dest = sys.argv[1], sys.argv[2], Path(sys.argv[3])
with zipfile.ZipFile(archive) as zf:
    for name in zf.namelist():
        rest = name[len(prefix):] if name.startswith(prefix) else ""
        if rest.endswith(".yaml") and "/" not in rest:
            (dest / rest).write_bytes(zf.read(name))
EOF
    compgen -G "$dest.tmp/*.yaml" >/dev/null || die "no CRDs under config/crd/standard in $zip"
    rm -rf "$dest" && mv "$dest.tmp" "$dest"
    log "gateway-api $v: $(find "$dest" -name '*.yaml' | wc -l) files in $dest"
}

prometheus_operator_crds_dir() { echo "$CACHE/prometheus-operator/$PROMETHEUS_OPERATOR_VERSION/crds"; }

# The Prometheus Operator's PodMonitor and ServiceMonitor CRDs, taken out of its module zip like the
# Gateway API's (nothing is built).
build_prometheus_operator_crds() {
    local v="$PROMETHEUS_OPERATOR_VERSION" dest zip
    dest="$(prometheus_operator_crds_dir)"
    if compgen -G "$dest/*.yaml" >/dev/null; then log "prometheus-operator $v CRDs: cached"; return; fi
    log "prometheus-operator $v: extracting its PodMonitor and ServiceMonitor CRDs from the module zip"
    zip="$(mod_field "github.com/prometheus-operator/prometheus-operator@$v" Zip)"
    [[ -s "$zip" ]] || die "cannot download github.com/prometheus-operator/prometheus-operator@$v from the module proxy"
    rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
    python3 - "$zip" "github.com/prometheus-operator/prometheus-operator@$v/example/prometheus-operator-crd/" "$dest.tmp" <<'EOF2'
import sys
import zipfile
from pathlib import Path

archive, prefix, dest = sys.argv[1], sys.argv[2], Path(sys.argv[3])
with zipfile.ZipFile(archive) as zf:
    for kind in ("podmonitors", "servicemonitors"):
        name = f"{prefix}monitoring.coreos.com_{kind}.yaml"
        (dest / Path(name).name).write_bytes(zf.read(name))
EOF2
    rm -rf "$dest" && mv "$dest.tmp" "$dest"
    log "prometheus-operator $v: $(find "$dest" -name '*.yaml' | wc -l) CRDs in $dest"
}

list() {
    local name
    for name in "${KUBE_BINARIES[@]}"; do echo "$BIN/$name-$KUBERNETES_VERSION"; done
    echo "$BIN/etcd-$ETCD_VERSION"
    echo "$BIN/kwok-$KWOK_VERSION"
    kwok_stages_dir
    echo "$BIN/helm-$HELM_VERSION"
    gateway_api_dir
    prometheus_operator_crds_dir
    for name in containerd containerd-shim-runc-v2 ctr; do echo "$BIN/$name-$CONTAINERD_VERSION"; done
    echo "$BIN/runc-$RUNC_VERSION"
    echo "$BIN/crictl-$CRI_TOOLS_VERSION"
    echo "$BIN/coredns-$COREDNS_VERSION"
    echo "$BIN/minio-$MINIO_VERSION"
    echo "$BIN/prometheus-$PROMETHEUS_VERSION"
    echo "$BIN/traefik-$TRAEFIK_VERSION"
    echo "$BIN/keda-operator-$KEDA_VERSION"
    echo "$BIN/keda-adapter-$KEDA_VERSION"
    echo "$BIN/metrics-server-$METRICS_SERVER_VERSION"
    echo "$BIN/kube-score-$KUBE_SCORE_VERSION"
    echo "$BIN/kstatus-$(kstatus_version)"
    echo "$BIN/registry-$DISTRIBUTION_VERSION"
}

build_component() {
    case "$1" in
        kubernetes) build_kubernetes ;;
        etcd) build_etcd ;;
        kwok) build_kwok ;;
        helm) build_helm ;;
        gateway-api) build_gateway_api ;;
        prometheus-operator-crds) build_prometheus_operator_crds ;;
        containerd) build_containerd ;;
        runc) build_runc ;;
        crictl) build_crictl ;;
        coredns) build_coredns ;;
        minio) build_minio ;;
        prometheus) build_prometheus ;;
        traefik) build_traefik ;;
        keda) build_keda ;;
        metrics-server) build_metrics_server ;;
        kube-score) build_kube_score ;;
        kstatus) build_kstatus ;;
        registry) build_registry ;;
    esac
}

main() {
    case "${1:-}" in
        --list) list; return ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; return ;;
    esac
    local print_crds=0 components=()
    local arg
    for arg in "$@"; do
        case "$arg" in
            --gateway-api-crds) print_crds=1; components+=(gateway-api) ;;
            kubernetes|etcd|kwok|helm|gateway-api|prometheus-operator-crds|containerd|runc|crictl|registry|coredns|minio|prometheus|traefik|keda|metrics-server|kube-score|kstatus) components+=("$arg") ;;
            all) components+=("${ALL_COMPONENTS[@]}") ;;
            *) die "unknown component '$arg' (${ALL_COMPONENTS[*]}, all)" ;;
        esac
    done
    [[ ${#components[@]} -gt 0 ]] || components=("${ALL_COMPONENTS[@]}")

    command -v go >/dev/null || die "go is not installed (needs go >= 1.26)"
    mkdir -p "$BIN" "$WORK"
    # Several callers (make, pytest workers) may build at once: serialize.
    exec 9>"$CACHE/.build.lock"
    if ! flock -n 9; then
        log "another build.sh is running; waiting for $CACHE/.build.lock"
        flock 9
    fi

    local start=$SECONDS c prefetch_pid=
    if [[ ${#components[@]} -gt 1 ]]; then
        prefetch $$ "${components[@]:1}" &
        prefetch_pid=$!
    fi
    for c in "${components[@]}"; do build_component "$c"; done
    # Long done by now as a rule (it only downloads); a failed build exits above and the
    # prefetch stops before its next component.
    [[ -z "$prefetch_pid" ]] || wait "$prefetch_pid" || true
    if [[ -d "$GOCACHE" && "${MODELDEPLOY_KEEP_GOCACHE:-0}" != 1 ]]; then
        log "removing the Go build cache $GOCACHE ($(du -sh "$GOCACHE" | cut -f1); MODELDEPLOY_KEEP_GOCACHE=1 keeps it)"
        go clean -cache && rm -rf "$GOCACHE"
    fi
    if [[ $print_crds == 1 ]]; then
        gateway_api_dir
    else
        log "all requested components ready in $((SECONDS - start))s (cache: $CACHE, $(du -sh "$CACHE" | cut -f1))"
    fi
}

main "$@"
