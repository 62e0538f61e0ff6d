// Package attach is the loom-sriov attachment kind: it gives a pod the SR-IOV VF that the
// kubelet allocated to it, configured on its PF, and gives the VF back as it found it.
//
// # Design notes
//
// The VF comes from the kubelet's allocation only. loomd writes the device the kubelet gave
// the pod for the NetworkAttachmentDefinition's resourceName into the configuration as
// "deviceID"; a configuration with a deviceID but no resourceName is refused, so a tenant
// cannot pick a VF by writing its address into a NetworkAttachmentDefinition. The VF is then
// read from sysfs with sriov.Scanner.Function, a handful of file reads instead of a scan.
//
// Claims. The kubelet allocates a device to one pod at a time, but a DEL that failed or
// never came leaves a VF configured for a pod that is gone, and a VF allocated again before
// that is released must not be taken from under it. So a VF in use has a claim: a file
// <address>.json in the state directory, created with link() so it exists whole or not at
// all, naming its owner (container, interface, pod) and holding everything needed to give
// the VF back — its settings on the PF before ADD, its netdev's name, MAC, MTU and link
// state, the attachment's Spec for the IPAM DEL. An ADD for a VF another interface holds is
// refused with an error naming the holder; an ADD by the holder itself (a runtime retrying)
// releases the VF first and starts again. Everything that changes a VF takes an flock on
// <address>.lock first, so ADD, DEL and GC of one VF, in one process or several, run one at
// a time.
//
// ADD, in order: claim; set the VF's settings on the PF (VLAN, QoS, spoof check, trust, link
// state, rates, and the MAC the pod's interface gets, so that spoof checking passes); move
// the netdev into the pod, rename it, set its MAC and MTU, bring it up; run the IPAM plugin
// and configure its addresses and routes. A DPDK VF (bound to a userspace driver) gets the
// PF-side settings only, and a network with IPAM is refused for it before anything is done.
// A failure undoes what was done, in reverse, and returns the first error; what cannot be
// undone stays in the claim, for the DEL that follows a failed ADD, or for GC.
//
// State restore and DEL. DEL finds the claim through the configuration's deviceID (or, when
// the configuration cannot say, by owner), leaves alone a VF another interface holds, and
// releases in reverse order: IPAM DEL; the netdev back to the host with its name, MAC and
// MTU; the PF's settings as saved. It keeps going past a failure, and drops the claim only
// when everything is released, so a later DEL or GC finishes the job. Nothing is kept in
// memory: after a restart of loomd the claim and the call's Spec are all DEL needs.
//
// DEL when the netns is gone. When a network namespace dies, the kernel moves physical
// netdevs, VFs among them, back to the host namespace under the name they had inside (or a
// "devN" name when that one is taken). DEL then finds the netdev in the host by the VF's PCI
// address — sysfs lists it under <root>/sys/bus/pci/devices/<vf>/net/ — or, failing that,
// by the pod's name for it and the MAC the pod gave it, and renames it back. A netdev found
// nowhere is logged and DEL goes on to restore the PF's settings.
//
// Work in other namespaces goes through netlink handles opened in them, so no thread ever
// changes namespace here. HostNetns names the namespace VF netdevs live in when no pod holds
// them (the node's namespace in tests and in the simulated cluster).
package attach
