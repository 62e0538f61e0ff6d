// Package e2e holds Loom's end-to-end suites: they run against the simulated cluster (package
// e2e/sim), with the real loom and loomd binaries, the reference CNI plugins as delegates and
// a real kube-apiserver, and drive pods through libcni as a container runtime does.
package e2e
