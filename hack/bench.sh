#!/usr/bin/env bash
# make bench: Loom's benchmarks. Every figure is measured in this run against a baseline
# measured in this same run; the output ends with one line per target:
#   BENCH <name> <measured> <unit> target <op> <value> PASS|FAIL
# and the script fails if any target does.
#
#   1. Go micro-benchmarks (ledger, network resolution, a VF attached and given back):
#      figures only.
#   2. CNI overhead (e2e/cnibench): loom against the bare delegates of the default network,
#      on a one-node cluster whose default network is the reference bridge plugin.
#   3. The primary network (e2e/fabricbench), one three-node cluster per mode, up, measured,
#      down: pod-to-pod throughput and latency against a veth pair made for the purpose, and
#      how fast node1's loomd routes the blocks of 1,000 simulated nodes.
#   4. Policy (e2e/policybench), no cluster: with 1,000 tenants and 10,000 pods known, pod-to-pod
#      throughput and latency through a node's compiled table against no table, the time to
#      admit and release one pod, and a full resync of the node's rules.
#   5. SR-IOV (e2e/sriovbench): how fast the device plugins show the kubelet a sysfs change
#      (no cluster), and the CNI ADD of a pod with a VF against the same pod with a macvlan, on
#      a one-node cluster with a simulated SR-IOV NIC.
#
# BENCH_KEEP=1 leaves the clusters running (and the working directory in place).
# BENCH_ONLY=policy,fabric runs only the sections named: micro, cni, fabric, policy, sriov.
set -euo pipefail

only=${BENCH_ONLY:-}
for section in ${only//,/ }; do
  case $section in
    micro | cni | fabric | policy | sriov) ;;
    *) echo "BENCH_ONLY names $section: want micro, cni, fabric, policy or sriov" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/bin
work=$(mktemp -d /tmp/loom-bench.XXXXXX)
results=$work/results
touch "$results"
# The network namespaces fabricbench and policybench make for themselves carry this prefix,
# so that the exit trap removes them even if a benchmark is killed before it can.
netns_prefix=loomb-$$-
clusters=()

cleanup() {
  local rc=$?
  if [ -z "${BENCH_KEEP:-}" ]; then
    for d in "${clusters[@]}"; do
      "$bin/loomctl" sim down --dir "$d" >/dev/null 2>&1 || true
    done
  fi
  ip netns list 2>/dev/null | awk -v p="$netns_prefix" 'index($1, p) == 1 {print $1}' |
    while read -r ns; do ip netns del "$ns" || true; done
  if [ "$rc" -eq 0 ] && [ -z "${BENCH_KEEP:-}" ]; then
    rm -rf "$work"
  else
    echo "logs and cluster directories: $work" >&2
  fi
}
trap cleanup EXIT

say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

# selected SECTION says whether the section runs: every one does unless BENCH_ONLY is set.
selected() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

# up DIR MODE NODES [FLAGS...] starts a cluster; down DIR stops it unless BENCH_KEEP is set.
# What they say goes to DIR.log.
up() {
  clusters+=("$1")
  if ! "$bin/loomctl" sim up --dir "$1" --mode "$2" --nodes "$3" "${@:4}" >"$1.log" 2>&1; then
    cat "$1.log" >&2
    return 1
  fi
  grep -o 'cluster ready.*' "$1.log" >&2
  export KUBECONFIG=$1/kubeconfig
}
down() {
  [ -n "${BENCH_KEEP:-}" ] || "$bin/loomctl" sim down --dir "$1" >>"$1.log" 2>&1
}

if selected micro; then
  say "Go micro-benchmarks (ledger, network resolution, VF attachment)"
  (cd "$root" && go test -run '^$' -bench . -benchmem ./delegate/ ./delegate/npwg/ ./sriov/attach/) | grep -E '^(Benchmark|ok)'
fi

if selected cni; then
  kubectl=${LOOM_KUBECTL:?LOOM_KUBECTL names kubectl (the Makefile sets it)}
  say "CNI overhead: a pod with the default network + 2 macvlan attachments, loom vs the bare delegates"
  start=$SECONDS
  up "$work/bridge" bridge 1
  "$kubectl" create namespace bench >/dev/null
  for i in 1 2; do
    cat <<YAML
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: bench-mv$i, namespace: bench}
spec:
  config: '{"cniVersion":"1.1.0","type":"macvlan","master":"eth0","mode":"bridge","ipam":{"type":"host-local","ranges":[[{"subnet":"172.29.$i.0/24"}]]}}'
---
YAML
  done | "$kubectl" apply -f - >/dev/null
  for i in $(seq 0 19); do
    cat <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: bench-$i
  namespace: bench
  annotations: {k8s.v1.cni.cncf.io/networks: "bench-mv1, bench-mv2", sim.loom.dev/unmanaged: "true"}
spec: {nodeName: node1, containers: [{name: app, image: registry.k8s.io/pause:3.10}]}
---
YAML
  done | "$kubectl" apply -f - >/dev/null
  pods=$("$kubectl" get pods -n bench -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}/{.metadata.uid},{end}')
  "$bin/loomctl" sim node-exec --dir "$work/bridge" node1 -- "$bin/cnibench" -pods "$pods" -n "${BENCH_ITERATIONS:-40}" | tee -a "$results"
  down "$work/bridge"
  echo "($((SECONDS - start)) s)" >&2
fi

if selected fabric; then
  # The primary network in each of Loom's modes: the paths from a pod on node1 to a pod on
  # node1 (same node), node2 (same underlay subnet) and, in vxlan-crosssubnet, node3 (the other
  # subnet, behind the router). -reference also measures the underlay itself between the nodes
  # named, to tell the simulation's share of a cross-node path from Loom's.
  datapath_start=$SECONDS
  routes_time=0
  for mode in vxlan bgp vxlan-crosssubnet; do
    case $mode in
      vxlan) to=node1,node2 reference=node2 ;;
      bgp) to=node2 reference= ;;
      vxlan-crosssubnet) to=node2,node3 reference=node3 ;;
    esac
    say "Primary network, mode $mode: datapath from node1 to $to"
    up "$work/$mode" "$mode" 3
    "$bin/fabricbench" datapath -dir "$work/$mode" -to "$to" -reference "$reference" -prefix "$netns_prefix" | tee -a "$results"
    if [ "$mode" != vxlan-crosssubnet ]; then
      say "Primary network, mode $mode: node1's loomd and 1,000 simulated nodes"
      routes_start=$SECONDS
      "$bin/fabricbench" routes -dir "$work/$mode" -nodes 1000 | tee -a "$results"
      routes_time=$((routes_time + SECONDS - routes_start))
    fi
    down "$work/$mode"
  done
  echo "(datapath $((SECONDS - datapath_start - routes_time)) s, control plane $routes_time s)" >&2
fi

# Policy needs no cluster: policybench makes its own node and pod namespaces, and a made-up
# cluster of 1,000 tenants and 10,000 pods for the engine to know.
if selected policy; then
  policy_start=$SECONDS
  say "Policy: pod-to-pod traffic through a node's table, 10,000 pods known, against no table"
  "$bin/policybench" datapath -prefix "$netns_prefix" | tee -a "$results"
  say "Policy: one pod admitted and released, and a full resync, 10,000 pods known"
  "$bin/policybench" apply -prefix "$netns_prefix" | tee -a "$results"
  echo "(policy $((SECONDS - policy_start)) s)" >&2
fi

if selected sriov; then
  sriov_start=$SECONDS
  say "SR-IOV: device plugin reaction to sysfs changes (fake sysfs, 200 ms rescans, fake kubelet)"
  "$bin/sriovbench" -rounds 25 | tee -a "$results"
  say "SR-IOV: ADD of a pod with a VF against the same pod with a macvlan"
  up "$work/sriov" vxlan 1 --sriov
  "$bin/sriovbench" add -dir "$work/sriov" -rounds 20 | tee -a "$results"
  down "$work/sriov"
  echo "(sriov $((SECONDS - sriov_start)) s)" >&2
fi

say "Verdicts (total $SECONDS s)"
grep '^BENCH ' "$results"
! grep -q '^BENCH .* FAIL$' "$results"
