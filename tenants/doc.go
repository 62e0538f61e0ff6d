// Package tenants is Loom's tenancy vocabulary: the Tenant custom resource, the validated
// Tenant value, which namespace belongs to which tenant, and the access decisions that
// loom-controller's admission webhook and loomd's CNI ADD both make. Everything here is pure:
// values in, values out, no API calls, no clock, no logging.
//
// # Design notes
//
// The resource. A Tenant (loom.dev/v1alpha1, cluster scoped, deployments/crds/
// loom.dev_tenants.yaml) selects its namespaces by label and names what its pods may use: the
// NetworkAttachmentDefinitions of other namespaces it shares, VLAN ranges, SR-IOV pools and a
// VF quota, address pools on the primary network, and the tenants it peers with. Namespaces
// that no tenant selects are the platform's (kube-system, ingress, DNS).
//
// Parse, never widen. The CRD schema fixes only the shape of a spec, so that a mistake is
// stored and reported (the Valid condition) rather than refused by kubectl with a message
// nobody reads in a GitOps pipeline. Parse turns the stored spec into a Tenant and a list of
// Problems, and every problem makes the tenant narrower, never wider: an entry that does not
// parse is left out (one VLAN range, pool or shared network fewer), a negative VF quota is
// zero, and a selector that is missing, malformed or empty (which would select every namespace
// of the cluster, the platform's included) selects nothing.
//
// Membership. A Directory is built from the parsed tenants and the namespaces with their
// labels. A namespace selected by exactly one tenant belongs to it; by none, to the platform;
// by several, to none of them: it is conflicted, and every access decision for a pod in it is
// a denial naming the tenants that claim it, until an administrator resolves the overlap.
// Guessing an owner would hand one tenant's pods to another.
//
// Decisions. CheckPod and CheckNetwork return nil or a *Denial naming the pod, the network,
// the tenant, the rule that was broken and what would make the request allowed. A tenant's
// pods use the NADs of its own namespaces and those it lists as shared, on its VLANs and
// SR-IOV pools only, within its VF quota, and without NET_ADMIN unless the Tenant allows it.
// Platform pods use anything except a tenant's networks. The same functions run at admission
// (so a bad pod is refused at kubectl apply) and at CNI ADD (so a pod admitted before a Tenant
// changed, or while the webhook was unreachable, still cannot attach).
//
// NADs whose configuration lives on the nodes. A NAD with an empty spec.config names a
// configuration file on every node, which the webhook cannot read. Such a NAD in a tenant's
// namespace is denied: a tenant could otherwise pick up any of the platform's configuration
// files, VLAN included, by creating a NAD of the same name.
package tenants
