// Package npwg implements the pod-facing half of the NPWG "Kubernetes Network Custom Resource
// Definition De-facto Standard" v1.3 for loomd: it owns the network selection annotations, their
// resolution to NetworkAttachmentDefinitions and configuration files, and the network-status
// annotation.
//
// The flow for one pod is
//
//	annotations ──ParseNetworks──▶ []Selection ──Resolver.Resolve──▶ []delegate.Spec (default first)
//	[]delegate.Outcome ──NetworkStatus──▶ []Status ──StatusAnnotation──▶ network-status value
//
// Resolve validates everything up front — annotation syntax, interface names, requested IPs,
// MACs, ports and bandwidth, namespace isolation, NAD configurations and plugin capabilities —
// and returns either a Spec for every attachment or the first problem it found, so a pod is
// never half attached because its third network was misspelt. Problems a user or an admin can
// fix are reported as *Error, which names the pod, the network and the fix.
//
// Where the standard is silent, or where Multus (the reference implementation) is lenient, this
// package chooses as follows:
//
//   - Unknown keys in a JSON selection element are an error (Multus ignores them): a typo such
//     as "interfce" would otherwise silently give the pod a different interface. Multus's legacy
//     "interfaceRequest" and "deviceID" keys are rejected with a hint; a pod must never pick its
//     own device on a multi-tenant node. Keys are matched exactly, case included, and a key given
//     twice is an error. A JSON null value counts as an absent key.
//   - An empty or blank networks annotation, and the JSON list [], mean no secondary networks.
//   - Network names are DNS-1123 subdomains ("units of the DNS-1123 label format"), namespaces
//     DNS-1123 labels. In the comma form, whitespace around items and around "/" and "@" is
//     trimmed; an empty item, namespace or interface ("a,,b", "/a", "a@") is an error.
//   - "ips" accepts plain addresses and address/prefix (static IPAM wants the prefix, host-local
//     and whereabouts take plain addresses); unspecified, multicast, zoned and repeated addresses
//     are rejected. "mac" must be a 48-bit unicast, non-zero Ethernet address; "infiniband-guid"
//     a non-zero 64-bit GUID. A portMappings protocol defaults to tcp (Kubernetes' default) and
//     must be tcp, udp or sctp. Bandwidth values are non-negative and, as the bandwidth plugin
//     requires, a rate and its burst are set together.
//   - An "ips" address or a "mac" that another interface has on the same segment — the
//     link layer a network's configuration puts it on, shared by NADs of one macvlan master,
//     bridge or SR-IOV pool — is refused before anything is attached, naming the pod, the
//     network and the holder (claims.go, segment.go; loomd checks it under the lock of the
//     node's ledger). loom-ipam refuses a taken address of its pools itself when it allocates.
//   - "ips" together with "ipam-claim-reference" is an error, as v1.3 of the standard says
//     (although the client library no longer enforces it). Multus does not forward the claim
//     reference at all: its own selection type has no such field, and OVN-Kubernetes reads it
//     back from the pod's annotation, which Loom leaves in place too. In addition Loom passes
//     it as the runtimeConfig key "ipamClaimReference", which libcni delivers only to plugins
//     that declare that capability; a plugin that does not is not an error.
//   - A pod may ask for the default route of each IP family on one attachment only, and with
//     one gateway per family: Multus rejects ECMP in the same way.
//   - Interface names are generated as net<k>, k being the position among the secondary
//     networks whether or not earlier ones named their interface (as Multus does); a clash with
//     a requested name or with the runtime's default interface is an error naming both networks.
//   - Namespace isolation never applies to the cluster default network the admin configured.
//     A per-pod default network (v1.multus-cni.io/default-network, namespace defaulting to the
//     system namespace as in Multus) may, under isolation, come from the pod's namespace, a
//     global namespace or the system namespace; Multus does not check it at all, which would
//     let a tenant attach its primary interface to another tenant's network. Unlike Multus no
//     namespace is global unless configured ("default" is not implied).
//   - The per-pod default network gets the kubelet's runtimeConfig; requests in its selection
//     element (ips, mac, ...) are checked against its plugins' capabilities and added, and a key
//     that the kubelet already sets is an error rather than a silent override.
//   - The configured default network "name" is looked up as a NAD in the system namespace, then
//     (only if that NAD does not exist) as a configuration file whose base name or "name" field
//     matches; "namespace/name" is always a NAD. File lookups skip unreadable files unless they
//     are the one asked for, and report them when nothing matches. The first match in lexical
//     file order wins, as with libcni.
//   - A NAD config with both "type" and "plugins" is an error (Multus treats it as a single
//     plugin). "cniVersion" is injected only when neither "cniVersion" nor "cniVersions" is set,
//     so an injected default can never outrank the versions the author listed. A "cni-args"
//     key replaces the same key in a plugin's args.cni, following the CNI conventions' rule that
//     args come from the runtime.
//   - network-status: per-interface data (interface, mac, mtu, ips) goes on one entry per pod
//     interface in a result; per-attachment data (default, dns, device-info, default-route) goes
//     on the entry of the attachment's own interface. An attachment that requested default-route
//     shows the gateways it requested; for the families nobody requested, the default network
//     shows the gateways of its result's default routes.
package npwg
