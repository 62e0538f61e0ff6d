// Package controller is loom-controller, Loom's cluster-wide controller. One replica at a time leads
// (a Lease in the lease namespace); the leader keeps the cluster's address blocks honest:
// it deletes the IPBlocks of nodes that no longer exist, so their addresses return to the
// pool and the other nodes withdraw their routes, and it releases allocations whose pod is
// gone (a DEL that never came, a node that died with pods on it). The leader also writes
// every Tenant's status: its namespaces, pods and addresses, and whether its spec is valid
// and its namespaces its alone.
//
// Every replica, leader or not, serves the admission webhook: the API server asks it before
// it stores a Pod, a NetworkAttachmentDefinition or a Tenant, a change of a pod's networks
// annotation or an ephemeral container added to a pod, and it refuses those that break a
// tenant's rules, so a bad pod is rejected at kubectl apply rather than stuck in
// ContainerCreating. The replicas share the webhook's certificate through a Secret and each
// keeps the ValidatingWebhookConfiguration that points the API server at them.
package controller
