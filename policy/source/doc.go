// Package source keeps the policy engine's view of the cluster: informers over pods,
// namespaces, nodes, Tenants, NetworkPolicies, MultiNetworkPolicies, NetworkAttachment-
// Definitions and IPBlocks, converted once, when they change, into the policy package's
// Snapshot. It is the one part of policy that talks to the API server; the compiler,
// renderer and engine in package policy take a Source and never import client-go.
package source
