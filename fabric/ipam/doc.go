// Package ipam is Loom's cluster IPAM: it hands out the addresses of pods and nodes on the
// built-in primary network, and of secondary networks whose configuration names the
// loom-ipam plugin.
//
// # Design notes
//
// Pools and blocks. A Pool is a range of IPv4 addresses (the cluster CIDR, a tenant's share
// of it, a secondary network's range) carved into equal blocks, /26 unless configured
// otherwise. Nodes do not allocate from the pool directly: a node claims whole blocks and
// allocates inside its own. Each claimed block is an IPBlock, a cluster-scoped custom
// resource (loom.dev/v1alpha1, deployments/crds/loom.dev_ipblocks.yaml) named after its
// pool and CIDR, labelled with its pool, node and tenant, that records every allocation in
// it: address, owner (a pod interface, or the node itself for an address such as its VTEP's)
// and since when. Because a tenant's pods draw from its pool's blocks, the tenant of an
// address is a prefix match, and routes to a node aggregate per block.
//
// Ownership instead of a lock. Only the node that owns a block adds allocations to it, so
// the ADD path takes no cluster-wide lock: an Allocate is an in-memory search and one Update
// of the node's own block, shared with the calls that come with it. Every write is optimistic. Claiming a block is a Create of its
// deterministic name, so of two nodes that pick the same block one gets AlreadyExists and
// tries the next; nodes start their search at an offset hashed from their name, so nodes
// that start together rarely pick the same block. Pools that share addresses (tenant pools
// carved from one cluster CIDR) are kept apart by a check after each Create: a claim gives
// way to any overlapping block it then sees, which guarantees that of two overlapping claims
// at least one gives way. An Update carries the resourceVersion the node last saw; the only
// other writer of a block is loom-controller removing allocations of pods that are gone, and
// a conflict with it costs the node one re-read. A node never allocates in another node's
// block, even when its own are full and the pool is otherwise exhausted.
//
// Group commit. Each change to a block rewrites the whole IPBlock, one API round trip, and
// changes to one block cannot overlap. So that pods starting or stopping together on a node do
// not wait for one round trip each, a node batches its changes per pool: while a batch is being
// written, further Allocate and Release calls wait, and the next batch makes all of them with
// one Update per block it touches. Each call still gets its own result; a batch's Update that
// conflicts is recomputed as a whole on the re-read block, and one that fails fails the calls
// it carried. batch.go says how batches are cut and what a caller that gives up leaves behind.
//
// Recovery. An Allocator keeps its node's blocks in memory, but the IPBlocks are the truth:
// after a restart Load reads them back, and Allocate for a container interface that already
// holds an address returns that address. Allocations are keyed by pool and container ID plus
// interface name, or for the node's own addresses by pool and a name saying what the
// address is for. Reconcile releases the addresses of containers the runtime no longer
// knows, for the DELs a node missed while it was down.
//
// Reclaim. Nodes cannot release what they no longer run: a deleted node's blocks, or the
// address of a pod deleted while its node was unreachable. The leader-elected
// loom-controller does: Plan, a pure function of the blocks, nodes and pods it sees, deletes
// the blocks of nodes that no longer exist and releases the pod addresses whose pod UID no
// longer exists, both only when older than a grace period, and never touches a live node's
// own addresses; Apply carries the plan out with the same optimistic concurrency.
//
// IPv4 only. An IPv6 pool or range is refused with ErrIPv6Unsupported.
package ipam
