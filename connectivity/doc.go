// Package connectivity checks a cluster's pods against what its tenants and policies say:
// it plans, for every ordered pair of pods, every network both are attached to and every
// address family both have an address of there, an ICMP echo and a TCP and a UDP probe on
// every port a policy names on that network (named ports resolved on the destination pod)
// and on one port no policy names; it takes each probe's expected verdict from the reference
// evaluator policy/oracle, never from Loom's compiler; it runs the probes with real packets
// from inside the source pod to a listener inside the destination pod; and it reports the
// differences.
//
// The three steps are separate: Plan is a pure function of a policy.Snapshot, Run drives the
// probes through a Pods (something that runs loomctl's probe commands inside a pod's network
// namespace), and Report prints the outcome. The probe commands themselves are Serve (TCP and
// UDP listeners that echo what they receive) and Dial (a batch of probes, answered one JSON
// line each as they finish); loomctl exposes them as hidden subcommands, so a pod needs
// nothing but loomctl to take part.
//
// Where the probes run:
//
//   - In the simulated cluster (e2e/sim) a pod is a network namespace on the host: the
//     probes are the host's loomctl run inside it, and the pods under test are the cluster's
//     own, no image needed.
//   - In any other cluster, ProbePods creates pods of its own, so that no workload is
//     touched: two per namespace under test and set of secondary networks its pods use,
//     spread over the nodes, running an image that holds loomctl, and runs the probe
//     commands in them through the API's pods/exec (kubectl exec). They carry a label of the
//     run and are deleted when the run ends, also when it is interrupted. Their verdicts are
//     those of pods like them: the tenant rules and the policies that select whole
//     namespaces, not the policies that select pods by label.
//
// What a verdict means: ICMP is reached when the echo reply comes back; TCP when the
// connection is established and the listener echoes the probe's token; UDP when the
// listener echoes the datagram's token back (a UDP probe that is dropped is a timeout, and
// so is one the listener never answered). The listeners reply from the address the probe
// was sent to, and the probe is sent from the source pod's address on the network, the
// addresses the oracle decides about.
package connectivity
