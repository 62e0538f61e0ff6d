// Package delegate attaches a pod to its networks and detaches it again.
//
// Every network type is an Attachment (Add, Check, Del). The Orchestrator runs a pod's
// attachments strictly in sequence, default network first, records each one in the node's
// Ledger before it is attempted, and on the first failure tears down what was attached in
// reverse order. DEL, CHECK and GC are driven by the ledger alone, so they work for a pod the
// API server no longer knows and while the API server is unreachable.
//
// This package does not import client-go: the loom CNI binary uses it to perform DEL from the
// ledger when loomd is down, and must start in a few milliseconds.
package delegate
