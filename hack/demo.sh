#!/usr/bin/env bash
# make demo: a three-node simulated cluster running Loom (node1 and node2 on one underlay
# subnet, node3 on another behind a router), pods with extra networks, and a look at what they
# got. Everything it starts stays up for you to explore; `make demo-down` removes it.
#
#   hack/demo.sh SIM_DIR [MODE]    MODE: vxlan (default), bgp, vxlan-crosssubnet or bridge
set -euo pipefail

dir=${1:?usage: hack/demo.sh SIM_DIR [vxlan|bgp|vxlan-crosssubnet|bridge]}
mode=${2:-vxlan}
# The network outside the cluster, behind the sim's router (loomctl sim status shows it).
external=203.0.113.1
root=$(cd "$(dirname "$0")/.." && pwd)
loomctl="$root/bin/loomctl"
kubectl=${LOOM_KUBECTL:?LOOM_KUBECTL names kubectl (the Makefile sets it)}
export KUBECONFIG=$dir/kubeconfig

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
podexec() { "$loomctl" sim exec --dir "$dir" "$@"; }
addr() { podexec "$1" -- ip -4 -o addr show dev "$2" | awk '{split($4, a, "/"); print a[1]}'; }

say "Starting a simulated cluster in $dir (real etcd + kube-apiserver, 3 nodes on 2 subnets, loomd on each, mode $mode, a simulated SR-IOV NIC per node)"
"$loomctl" sim up --dir "$dir" --nodes 3 --mode "$mode" --sriov
"$loomctl" sim status --dir "$dir"

say "Networks and pods (examples/demo)"
run "$kubectl" create namespace demo
run "$kubectl" apply -f "$root/examples/demo/networks.yaml"
run "$kubectl" apply -f "$root/examples/demo/pods.yaml"
run "$kubectl" apply -f "$root/examples/demo/sriov.yaml"
# delta has the primary network only, on node3: on the other subnet, behind the router.
run "$kubectl" apply -f - <<'YAML'
apiVersion: v1
kind: Pod
metadata:
  name: delta
  namespace: demo
spec:
  nodeName: node3
  containers: [{name: app, image: registry.k8s.io/pause:3.10}]
YAML
run "$kubectl" wait --for=condition=Ready pod --all -n demo --timeout=90s
run "$kubectl" get pods -n demo -o wide

for pod in alpha beta gamma vf-1; do
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
    printf '  ok    %-56s %s -> %s\n' "$what" "$from" "$to"
  else
    printf '  FAIL  %-56s %s -> %s\n' "$what" "$from" "$to"
    fail=1
  fi
}
check "bridge-local, same node (local0)" demo/alpha "$(addr demo/beta local0)"
check "macvlan-underlay, across nodes (data0 -> net1)" demo/alpha "$(addr demo/gamma net1)"
check "primary network, across nodes on one subnet (eth0)" demo/alpha "$(addr demo/gamma eth0)"
check "primary network, across subnets via the router (eth0)" demo/alpha "$(addr demo/delta eth0)"
check "SR-IOV VFs, across nodes (net1, VLAN 100)" demo/vf-1 "$(addr demo/vf-2 net1)"
if [[ $mode == bgp ]]; then
  check "outside the cluster, route from the router's BGP" demo/delta "$external"
fi

if [[ $mode != bridge ]]; then
  say "Tenants (examples/demo/tenants.yaml): acme and globex; demo is the platform"
  run "$kubectl" apply -f "$root/examples/demo/tenants.yaml"
  run "$kubectl" wait --for=condition=Ready pod --all -n acme --timeout=90s
  run "$kubectl" wait --for=condition=Ready pod --all -n globex --timeout=90s
  say "The admission webhook refuses an acme pod on a platform network acme was not given"
  if "$kubectl" run intruder -n acme --image=registry.k8s.io/pause:3.10 \
      --overrides='{"metadata":{"annotations":{"k8s.v1.cni.cncf.io/networks":"demo/macvlan-underlay"}}}' 2>&1; then
    echo "  FAIL  the pod was admitted"
    fail=1
  fi
  say "... and an acme network on the node's own eth0"
  if "$kubectl" apply -f - 2>&1 <<'YAML'
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: own-lan, namespace: acme}
spec:
  config: '{"cniVersion":"1.0.0","type":"macvlan","master":"eth0","mode":"bridge","ipam":{"type":"loom-ipam","range":"192.168.92.0/24"}}'
YAML
  then
    echo "  FAIL  the network was admitted"
    fail=1
  fi
  say "Who reaches whom: every pod pair on every network, ICMP, TCP and UDP, against the tenants' rules and policies"
  # Rules reach the other nodes within moments of a pod's start.
  for try in 1 2 3 4 5; do
    if "$loomctl" connectivity --dir "$dir" -n acme,globex >"$dir/connectivity.txt" 2>&1; then
      break
    fi
    sleep 2
  done
  cat "$dir/connectivity.txt"
  grep -q "every one matches the policy" "$dir/connectivity.txt" || fail=1
fi

say "Explore"
cat <<MSG
  export KUBECONFIG=$KUBECONFIG
  $loomctl sim status --dir $dir   # nodes, subnets, the router
  $kubectl get pods -n demo -o wide
  $kubectl get net-attach-def -n demo
  $loomctl sim exec --dir $dir demo/alpha -- ip route
  $loomctl sim node-exec --dir $dir node1 -- ip route
  $loomctl connectivity --dir $dir -n acme,globex      # tenants: who reaches whom
  $loomctl tenants --dir $dir                          # tenants: namespaces, pods, networks
  $loomctl sim node-exec --dir $dir node1 -- ls /var/lib/loom/sriov     # VFs in use (claims)
  cat $dir/nodes/node1/root/var/lib/loom/sim-vf-state.json   # what each PF holds for its VFs
  $loomctl sim node-exec --dir $dir node1 -- nft list table inet loom   # the rules
MSG
if [[ $mode == bgp ]]; then
  echo "  $loomctl sim birdc --dir $dir show route   # the route reflector in the router"
fi
cat <<MSG
  $loomctl sim node-exec --dir $dir node1 -- ls /var/lib/loom/ledger     # the attachment ledger
  $loomctl sim node-exec --dir $dir node1 -- cat /etc/cni/net.d/00-loom.conflist
  less $dir/nodes/node1/loomd.log
Add your own NetworkAttachmentDefinitions and pods with kubectl; the pod runtime on each node
attaches them through Loom as containerd would.

Tear it all down with:  make demo-down   (or $loomctl sim down --dir $dir)
MSG
exit $fail
