#!/usr/bin/env bash
# make demo: a two-node simulated cluster running Loom, three pods with extra networks, and a
# look at what they got. Everything it starts stays up for you to explore; `make demo-down`
# removes it.
set -euo pipefail

dir=${1:?usage: hack/demo.sh SIM_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
loomctl="$root/bin/loomctl"
kubectl=${LOOM_KUBECTL:?LOOM_KUBECTL names kubectl (the Makefile sets it)}
export KUBECONFIG=$dir/kubeconfig

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
podexec() { "$loomctl" sim exec --dir "$dir" "$@"; }
addr() { podexec "$1" -- ip -4 -o addr show dev "$2" | awk '{split($4, a, "/"); print a[1]}'; }

say "Starting a simulated cluster in $dir (real etcd + kube-apiserver, 2 nodes, loomd on each)"
"$loomctl" sim up --dir "$dir" --nodes 2

say "Networks and pods (examples/demo)"
run "$kubectl" create namespace demo
run "$kubectl" apply -f "$root/examples/demo/networks.yaml"
run "$kubectl" apply -f "$root/examples/demo/pods.yaml"
run "$kubectl" wait --for=condition=Ready pod --all -n demo --timeout=90s
run "$kubectl" get pods -n demo -o wide

for pod in alpha beta gamma; do
  say "demo/$pod: interfaces inside the pod"
  podexec "demo/$pod" -- ip -br addr
  say "demo/$pod: k8s.v1.cni.cncf.io/network-status"
  "$kubectl" get pod -n demo "$pod" -o jsonpath='{.metadata.annotations.k8s\.v1\.cni\.cncf\.io/network-status}'
  echo
done

say "Ping checks"
fail=0
check() {
  local what=$1 from=$2 to=$3
  if podexec "$from" -- ping -c 2 -W 2 -q "$to" >/dev/null 2>&1; then
    printf '  ok    %-52s %s -> %s\n' "$what" "$from" "$to"
  else
    printf '  FAIL  %-52s %s -> %s\n' "$what" "$from" "$to"
    fail=1
  fi
}
check "bridge-local, same node (local0)" demo/alpha "$(addr demo/beta local0)"
check "macvlan-underlay, across nodes (data0 -> net1)" demo/alpha "$(addr demo/gamma net1)"
check "default network, across nodes (eth0)" demo/alpha "$(addr demo/gamma eth0)"

say "Explore"
cat <<MSG
  export KUBECONFIG=$KUBECONFIG
  $kubectl get pods -n demo -o wide
  $kubectl get net-attach-def -n demo
  $loomctl sim exec --dir $dir demo/alpha -- ip route
  $loomctl sim node-exec --dir $dir node1 -- ls /var/lib/loom/ledger     # the attachment ledger
  $loomctl sim node-exec --dir $dir node1 -- cat /etc/cni/net.d/00-loom.conflist
  less $dir/nodes/node1/loomd.log
Add your own NetworkAttachmentDefinitions and pods with kubectl; the pod runtime on each node
attaches them through Loom as containerd would.

Tear it all down with:  make demo-down   (or $loomctl sim down --dir $dir)
MSG
exit $fail
