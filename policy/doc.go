// Package policy enforces tenants and network policies on a node's pods. It owns the whole
// path from the cluster's objects to the kernel's rules:
//
//	NetworkPolicy, MultiNetworkPolicy ──FromNetworkPolicy, FromMultiNetworkPolicy──▶ Policy
//	Snapshot (tenants, namespaces, networks, pods, policies) ──Compile(node)──▶ Ruleset
//	Ruleset.Host, Ruleset.Pods[pod] ──Render──▶ nftables table ──Applier──▶ kernel
//
// Compile is a pure function: it reads nothing but its Snapshot and returns a value, so it is
// tested without root, and the engine may call it on every change.
//
// # Parsing never widens
//
// Policies are validated once, when they change, into the form Compile uses; what is wrong is
// reported in Policy.Problems as "field path: what is wrong". An invalid part is left out, and
// leaving it out only ever narrows what the policy allows: a bad port or peer is dropped, and a
// rule that listed ports or peers and has none left is dropped with it (empty ports or peers
// would mean every port or peer); a bad ipBlock except drops its peer, not the except; an
// unknown policy type isolates both directions; a bad podSelector selects every pod of the
// namespace with no rules. A MultiNetworkPolicy is decoded one element at a time, so that
// an element of the wrong JSON type costs that element only, and it applies to the networks
// its k8s.v1.cni.cncf.io/policy-for annotation names: none when the annotation is missing.
// Both address families are policy's business everywhere: an ipBlock, a set, a guard holds
// IPv4 and IPv6 alike, and an IPv4-mapped IPv6 ipBlock is a problem (write the IPv4 CIDR).
//
// # The enforcement model
//
// Each attachment of a local pod is an endpoint, and each direction of its traffic passes two
// checks in order:
//
//  1. The tenant guard drops traffic whose peer is in the set Universe (the addresses of the
//     network that belong to pods) but not in the set Allowed. On the primary network a
//     tenant's pod reaches its own tenant, the tenants that name it as a peer and that it names
//     back, the platform (namespaces in no tenant: DNS, ingress) and the nodes; addresses
//     outside the cluster CIDR are not the guard's business. A platform pod has no guard there.
//     On a secondary network a pod reaches its own tenant and its mutual peers only; the
//     platform's pods there reach only one another. Since Loom cannot know which secondary
//     networks share a link layer (two NADs on one master, two pools on one PF), the
//     secondary guard is drawn over all of them at once: a pod of another tenant attached
//     through another NAD is kept out all the same. While no tenant's pod is on any
//     secondary network, the platform's pods have no guard there at all.
//  2. If a policy selects the endpoint for that direction, only what one of the rules of the
//     selecting policies allows passes, with Kubernetes' semantics: policyTypes defaulting,
//     podSelector and namespaceSelector peers, ipBlock with except, ports with endPort, named
//     ports resolved against the selected pod's own ports on ingress and against each
//     destination pod's ports on egress.
//
// Below both, every interface of a local pod has link rules (Table.Links, RenderLinks), which
// see every frame whatever its ethertype: the pod sends from no hardware or network address
// it was not given (ARP senders and neighbour-advertisement targets included), and on a
// secondary network, where pods of several tenants may share a link layer, the tenant
// guard's sets also hold the pods' hardware addresses, so that frames the network-address
// rules never see (ARP, IPv6 link-local, other ethertypes) stop at the same boundary.
//
// Established traffic is allowed back by the renderer's connection tracking; the rules decide
// new connections only. The rules of the primary network live on the node, on the host side of
// each pod's veth (Ruleset.Host); those of macvlan, ipvlan and SR-IOV netdevs, whose traffic
// never crosses the host's stack, live inside the pod's network namespace (Ruleset.Pods).
//
// # Why sets
//
// Every address a rule matches is in a named set (AddrSet), and a rule names the set, never its
// members: the per-packet cost is one set lookup whatever the number of pods, policies or
// tenants, and a tenant's pods are matched by the prefixes of its address blocks rather than
// one by one. Set names are derived from what a set means (what a tenant reaches on a
// network, the pods some selectors pick on a network), hashed, never from its members, and a
// meaning has one set however many rules and endpoints use it. So a pod coming or going
// changes the elements of the sets it belongs to and no rule: an update is a few set
// elements, applied in one transaction. The exception is an egress rule with a named port,
// which has a set and a rule per port number the name has among its destinations: a pod
// bringing a new number brings a rule.
package policy
