// Package daemon is loomd's CNI service: it answers the loom binary's calls from informer
// caches of this node's pods and of NetworkAttachmentDefinitions, resolves a pod's networks,
// runs them through the delegate orchestrator, writes network-status, and writes the CNI
// configuration file once it is ready to serve.
package daemon
