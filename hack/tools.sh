#!/usr/bin/env bash
# Installs the programs Loom's tests and demo need into a cache outside the repository
# (LOOM_TOOLS, default ~/.cache/loom/tools), each keyed by version and never rebuilt once
# present. Everything comes from the Go module proxy or Debian packages.
#
#   hack/tools.sh all         everything below
#   hack/tools.sh kube        kube-apiserver + kubectl (built from k8s.io/kubernetes)
#   hack/tools.sh cni         the reference CNI plugins and cnitool
#   hack/tools.sh debs        etcd, BIRD, iproute2, iptables, nftables, iperf3, sockperf...
#   hack/tools.sh env         print the paths as make variables
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.34.4}
CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION:-v1.9.1}
CNI_VERSION=${CNI_VERSION:-v1.3.0}
LOOM_TOOLS=${LOOM_TOOLS:-$HOME/.cache/loom/tools}

KUBE_DIR=$LOOM_TOOLS/kubernetes-$KUBE_VERSION
CNI_DIR=$LOOM_TOOLS/cni-plugins-$CNI_PLUGINS_VERSION
CNITOOL_DIR=$LOOM_TOOLS/cnitool-$CNI_VERSION

DEBS=(etcd-server bird2 iproute2 iptables nftables iputils-ping iperf3 sockperf tcpdump procps openssl)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# elapsed runs a long command and prints a heartbeat every 30 s, so a cold build does
# not look like a hang.
elapsed() {
  local start=$SECONDS
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    if (( (SECONDS - start) % 30 < 5 )) && kill -0 "$pid" 2>/dev/null; then
      say "  ... still working ($((SECONDS - start)) s)"
    fi
  done
  wait "$pid"
}

kube() {
  if [[ -x $KUBE_DIR/bin/kube-apiserver && -x $KUBE_DIR/bin/kubectl ]]; then
    return
  fi
  say "building kube-apiserver and kubectl $KUBE_VERSION from the Go module proxy into $KUBE_DIR"
  say "  (cold: ~15 min and ~3 GB of module and build cache on 2 cores; later runs reuse it)"
  local src=$KUBE_DIR/src
  mkdir -p "$src" "$KUBE_DIR/bin"
  local staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
    cloud-provider cluster-bootstrap code-generator component-base component-helpers
    controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation
    endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy
    kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission sample-apiserver
    sample-cli-plugin sample-controller)
  local staging_version=v0${KUBE_VERSION#v1}
  {
    echo "module loom.local/kubetools"
    echo
    echo "go 1.24"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    for m in "${staging[@]}"; do echo "replace k8s.io/$m => k8s.io/$m $staging_version"; done
  } >"$src/go.mod"
  cat >"$src/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  local major=${KUBE_VERSION#v}; major=${major%%.*}
  local minor=${KUBE_VERSION#v*.}; minor=${minor%%.*}
  local pkg=k8s.io/component-base/version
  local ldflags="-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  (
    cd "$src"
    say "  resolving and downloading modules"
    elapsed bash -c 'GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true'
    GOFLAGS=-mod=mod elapsed go mod download
    say "  compiling"
    CGO_ENABLED=0 GOFLAGS=-mod=mod elapsed go build -trimpath -tags tools -ldflags "$ldflags" \
      -o "$KUBE_DIR/bin/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
  )
  "$KUBE_DIR/bin/kube-apiserver" --version >&2
}

cni() {
  if [[ ! -x $CNI_DIR/macvlan ]]; then
    say "installing the reference CNI plugins $CNI_PLUGINS_VERSION into $CNI_DIR"
    local plugins=(main/macvlan main/ipvlan main/bridge main/ptp main/host-device main/vlan
      ipam/host-local ipam/static ipam/dhcp meta/tuning meta/portmap meta/bandwidth meta/sbr
      meta/firewall)
    local pkgs=()
    for p in "${plugins[@]}"; do pkgs+=("github.com/containernetworking/plugins/plugins/$p@$CNI_PLUGINS_VERSION"); done
    mkdir -p "$CNI_DIR"
    GOBIN=$CNI_DIR CGO_ENABLED=0 elapsed go install -trimpath "${pkgs[@]}"
  fi
  if [[ ! -x $CNITOOL_DIR/cnitool ]]; then
    say "installing cnitool $CNI_VERSION into $CNITOOL_DIR"
    mkdir -p "$CNITOOL_DIR"
    GOBIN=$CNITOOL_DIR CGO_ENABLED=0 go install "github.com/containernetworking/cni/cnitool@$CNI_VERSION"
  fi
}

debs() {
  local missing=()
  for d in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q 'install ok installed' || missing+=("$d")
  done
  ((${#missing[@]} == 0)) && return
  say "installing Debian packages: ${missing[*]}"
  local sudo=
  [[ $(id -u) != 0 ]] && sudo=sudo
  $sudo apt-get update -qq >/dev/null || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The etcd-server and bird2 packages start a system etcd and BIRD; Loom's tests run their own
  # (the simulated cluster's BIRD runs in its router's network namespace).
  local svc
  for svc in etcd bird; do
    if command -v systemctl >/dev/null && systemctl is-active -q "$svc" 2>/dev/null; then
      $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  done
}

env_vars() {
  echo "KUBE_APISERVER=$KUBE_DIR/bin/kube-apiserver"
  echo "KUBECTL=$KUBE_DIR/bin/kubectl"
  echo "CNI_PLUGINS_DIR=$CNI_DIR"
  echo "CNITOOL=$CNITOOL_DIR/cnitool"
}

case ${1:-all} in
  all) debs; cni; kube ;;
  kube) kube ;;
  cni) cni ;;
  debs) debs ;;
  env) env_vars ;;
  *) echo "usage: $0 all|kube|cni|debs|env" >&2; exit 2 ;;
esac
