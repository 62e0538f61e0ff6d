// Package sim runs a simulated Kubernetes cluster on one Linux machine: the test bed of
// Loom's end-to-end tests and the engine of `make demo` (`loomctl sim ...`).
//
// A cluster is a real etcd and kube-apiserver in the root network namespace, an optional
// loom-controller beside them, and N nodes. Each node is a network namespace on an underlay
// of two subnets joined by a router (see underlay.go and router.go), plus a persistent mount
// namespace in which the node-local paths (/run, /etc/cni/net.d, /opt/cni/bin, /var/lib/cni,
// /var/lib/loom, /etc/loom) are bind mounts of directories under the cluster's directory, so
// that node state is per node exactly as on a real machine and tests on the host can read
// it. In each node a supervisor process (`loomctl sim node`, see RunNode) starts and
// restarts loomd and runs the pod runtime (package podruntime), which plays kubelet and
// containerd: pods become network namespaces attached through libcni. Options.Mode chooses
// the primary network: one of Loom's own (vxlan, bgp, vxlan-crosssubnet), which loomd runs
// (in bgp with the router's BIRD as route reflector), or bridge, the reference bridge plugin
// with static routes.
//
// Every name a cluster creates carries its slot number S (1..250), reserved under
// /run/loom-sim so that clusters run side by side: netns loomS-underlay, loomS-router,
// loomS-ext and loomS-node1…, the root-side link loomS-ul with 198.18.S.1/24 and a route to
// 198.19.S.0/24 through the router (RFC 2544 benchmarking space, never routed off the
// machine), node underlay addresses 198.18.S.(10+i) on subnet A and 198.19.S.(10+i) on
// subnet B. Nodes and the router have no default route: test traffic cannot leave the
// machine.
//
// Layout of a cluster directory DIR:
//
//	sim.json               the cluster's state (slot, nodes, ports, options); see Open
//	kubeconfig             admin kubeconfig (https://198.18.S.1:6443, token auth)
//	pki/                   CA, serving certificate, service-account keys, static tokens
//	etcd.log apiserver.log controller.log
//	bird.conf bird.log     the router's BIRD (mode bgp)
//	nodes/NAME/root/...    the node's /run, /etc/cni/net.d, /opt/cni/bin, /var/lib/cni,
//	                       /var/lib/loom and /etc/loom, as seen from the host
//	nodes/NAME/sandboxes/  the pod runtime's sandbox records
//	nodes/NAME/status.json what the supervisor reports (runtime ready, loomd state)
//	nodes/NAME/loomd.hold  present while loomd is held down (StopLoomd)
//	nodes/NAME/supervisor.log loomd.log
//
// and of its slot directory /run/loom-sim/slot-S: dir (DIR's path), owner, pids/ (etcd,
// apiserver, controller, bird, node-NAME), bird.ctl (BIRD's control socket), ns/ (a private
// mount holding each node's mount namespace pin). etcd's data lives in /dev/shm, named after
// the slot directory, so its fsyncs do not stall the nodes (see slotDir.etcdData).
package sim
