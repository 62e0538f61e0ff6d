// Package metrics owns every Prometheus metric Loom exports: the counters loomd keeps of the
// CNI calls it serves and of the calls its orchestrator makes to each network type, the
// collectors that read loomd's components (attachment ledger, IPAM, BGP, VXLAN, policy,
// SR-IOV) when Prometheus scrapes, and loom-controller's webhook, address reclaim, tenant
// status and leadership metrics. docs/metrics.md lists them for operators.
//
// # Design notes
//
// Only the CNI counters and histograms sit on the ADD path, and they cost no allocation
// there: the children of each operation are resolved once, when the CNI type is made, and
// those of a (operation, network type, plugin) combination the first time it is seen. The
// rest is read at scrape time by custom Collectors from accessors the components already
// have (ipam's Usage, the BGP speaker's Peers, the policy engine's Stats...), so a metric
// never needs a hook in a component's own code and cannot fall out of step with it.
// Collectors take those accessors as functions: cmd/ wires the real ones, tests give real
// small objects or fakes.
//
// Collectors must be cheap and must not block behind the work they describe. The ledger is
// one file per container: its collector reads it again only when the ledger's generation
// says a record changed. Accessors that would wait for a write (IPAM's blocks, the policy
// engine's nft runs) read counters kept for them instead.
//
// Nothing goes to Prometheus's global default registry: each binary makes one Registry with
// NewRegistry and serves it with Handler on its health server.
//
// Label values from users are bounded: a plugin type is whatever a NetworkAttachmentDefinition
// says, so the CNI type keeps at most maxPlugins of them and counts the calls of any other
// as plugin "other".
package metrics
