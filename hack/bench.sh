#!/usr/bin/env bash
# make bench: Loom's benchmarks. Every figure is measured in this run against a baseline
# measured in this same run; the output ends with one line per target:
#   BENCH <name> <measured> <unit> target <op> <value> PASS|FAIL
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/bin
kubectl=${LOOM_KUBECTL:?LOOM_KUBECTL names kubectl (the Makefile sets it)}
dir=$(mktemp -d /tmp/loom-bench.XXXXXX)
results=$(mktemp)
trap '[ -n "${BENCH_KEEP:-}" ] || "$bin/loomctl" sim down --dir "$dir" >/dev/null 2>&1 || true; rm -f "$results"' EXIT
export KUBECONFIG=$dir/kubeconfig

say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

say "Go micro-benchmarks (ledger, network resolution)"
(cd "$root" && go test -run '^$' -bench . -benchmem ./delegate/ ./delegate/npwg/) | grep -E '^(Benchmark|ok)'

say "CNI overhead: a pod with the default network + 2 macvlan attachments, loom vs the bare delegates"
"$bin/loomctl" sim up --dir "$dir" --nodes 1 2>&1 | tail -1 >&2
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
"$bin/loomctl" sim node-exec --dir "$dir" node1 -- "$bin/cnibench" -pods "$pods" -n "${BENCH_ITERATIONS:-40}" >"$results"
grep -v '^BENCH ' "$results"

say "Verdicts"
grep '^BENCH ' "$results"
! grep -q '^BENCH .* FAIL$' "$results"
