// Package bgp is the bgp mode of Loom's built-in primary network: a BGP speaker embedded in
// loomd that advertises the node's pod address blocks with the node as next hop, peers with
// the other nodes (a full iBGP mesh) and with configured route reflectors or top-of-rack
// routers, and installs the best route it learns for each remote block into the kernel's
// main table with protocol bgp. Pod traffic follows those routes without encapsulation.
//
// The Speaker owns the BGP side (GoBGP, run in-process); KernelRoutes owns the kernel side.
// They meet at RouteSink, so the speaker is tested without root against a recording sink.
package bgp
