// Package fabric is Loom's built-in primary network: every pod's eth0.
//
// # Design notes
//
// Addresses come from the cluster CIDR, carved into blocks that nodes claim (fabric/ipam);
// a node allocates only inside its own blocks, so an ADD takes no cluster-wide lock. A pod
// gets its address as a /32 on a veth pair (fabric/podnet) and routes everything through a
// link-local gateway on the host end, so the pod side is the same in every mode, and the node
// routes each of its pods by a host route.
//
// Between nodes, whole blocks are routed, never single pods:
//   - vxlan: one VTEP per node (fabric/vxlan). Each node publishes its VTEP's MAC and address
//     on its Node object; every node programs, per remote block, an onlink route via the
//     remote VTEP address, a permanent neighbour entry and an FDB entry. No learning, no
//     flooding: the API server is the only source of truth.
//   - bgp: GoBGP embedded in loomd (fabric/bgp) advertises the node's blocks with the node as
//     next hop to the other nodes (mesh) and to configured peers or route reflectors, and
//     installs what it learns as plain kernel routes. No encapsulation.
//   - vxlan-crosssubnet: like vxlan, but a peer on the node's own underlay subnet is routed
//     directly, without encapsulation.
//
// In both VXLAN modes the VTEP takes encapsulated traffic only from the underlay addresses of
// the other nodes: a guard table (nftables "inet loom_underlay", fabric/vxlan) drops UDP to
// the VXLAN port from any other source, and from pods always, so that no pod can hand the
// node a frame that seems to come from another node's pod. bgp mode receives no
// encapsulation.
//
// The Network reconciles from informers on Nodes and IPBlocks; it never removes kernel state
// when loomd stops, so a restart does not interrupt traffic, and it rebuilds the dataplane
// from scratch periodically so that anything removed by hand comes back.
package fabric
