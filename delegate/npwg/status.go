package npwg

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"

	current "github.com/containernetworking/cni/pkg/types/100"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"

	"github.com/loom-cni/loom/delegate"
)

// Status is one entry of the k8s.v1.cni.cncf.io/network-status annotation. It differs from
// nadv1.NetworkStatus in one key: the standard calls the gateway list "default-route", where
// the client library writes "gateway".
type Status struct {
	Name      string     `json:"name"`
	Interface string     `json:"interface,omitempty"`
	IPs       []string   `json:"ips,omitempty"`
	Mac       string     `json:"mac,omitempty"`
	MTU       int        `json:"mtu,omitempty"`
	Default   bool       `json:"default,omitempty"`
	DNS       *nadv1.DNS `json:"dns,omitempty"`
	// DeviceInfo is the attachment's NPWG device-info object, as the attachment wrote it.
	DeviceInfo json.RawMessage `json:"device-info,omitempty"`
	// DefaultRoute lists the gateways of the pod's default routes that go through this
	// interface.
	DefaultRoute []string `json:"default-route,omitempty"`
}

// NetworkStatus builds the network-status entries of a pod's attachments, in order. Results of
// any CNI version are converted with the CNI library. Each pod interface in a result gets an
// entry; the attachment's own interface (the one named Spec.Ifname) carries the
// per-attachment data: default, dns, device-info and default-route. At most one outcome may be
// the default network, and only its own entry says default: true.
//
// The default routes shown are the ones the pod has: for an IP family an attachment asked to
// carry (Spec.DefaultRoute), the gateway it asked for; for the other families, the default
// network's gateways in its result's routes to 0.0.0.0/0 or ::/0.
func NetworkStatus(outcomes []delegate.Outcome) ([]Status, error) {
	requested := map[int]int{} // IP family -> index of the outcome that carries its default route
	defaults := 0
	for i, o := range outcomes {
		if o.Default {
			defaults++
		}
		for _, gw := range o.DefaultRoute {
			a, err := netip.ParseAddr(gw)
			if err != nil {
				return nil, fmt.Errorf("build network-status: network %s: default-route gateway %q: %w", o.Network, gw, err)
			}
			if prev, dup := requested[family(a)]; dup && prev != i {
				return nil, fmt.Errorf("build network-status: networks %s and %s both carry the IPv%d default route",
					outcomes[prev].Network, o.Network, family(a))
			}
			requested[family(a)] = i
		}
	}
	if defaults > 1 {
		return nil, fmt.Errorf("build network-status: %d attachments are marked as the default network", defaults)
	}

	var out []Status
	for i, o := range outcomes {
		entries, primary, routes, err := outcomeStatus(o)
		if err != nil {
			return nil, fmt.Errorf("build network-status: network %s: %w", o.Network, err)
		}
		p := &entries[primary]
		p.Default = o.Default
		for _, f := range []int{4, 6} {
			carrier, ok := requested[f]
			switch {
			case ok && carrier == i:
				for _, gw := range o.DefaultRoute {
					if a := netip.MustParseAddr(gw); family(a) == f {
						p.DefaultRoute = append(p.DefaultRoute, a.Unmap().String())
					}
				}
			case !ok && o.Default:
				p.DefaultRoute = append(p.DefaultRoute, routes[f]...)
			}
		}
		if len(o.DeviceInfo) > 0 && !isNull(o.DeviceInfo) {
			var buf bytes.Buffer
			if err := json.Compact(&buf, o.DeviceInfo); err != nil || buf.Bytes()[0] != '{' {
				return nil, fmt.Errorf("build network-status: network %s: device-info is not a JSON object", o.Network)
			}
			p.DeviceInfo = buf.Bytes()
		}
		out = append(out, entries...)
	}
	return out, nil
}

// outcomeStatus returns the entries for one attachment, the index of its own interface's entry
// and the gateways of its result's default routes by IP family.
func outcomeStatus(o delegate.Outcome) ([]Status, int, map[int][]string, error) {
	routes := map[int][]string{}
	if o.Result == nil {
		return []Status{{Name: o.Network, Interface: o.Ifname}}, 0, routes, nil
	}
	res, err := current.NewResultFromResult(o.Result)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("convert CNI result: %w", err)
	}
	for _, r := range res.Routes {
		if r == nil {
			continue
		}
		if ones, _ := r.Dst.Mask.Size(); ones != 0 || (r.Dst.IP != nil && !r.Dst.IP.IsUnspecified()) {
			continue
		}
		gwIP := r.GW
		if gwIP == nil {
			// A route without "gw" goes through the plugin's default gateway: the gateway of
			// the result's address of the same family (CNI spec, "routes").
			gwIP = ipConfigGateway(res, r.Dst.IP.To4() != nil)
		}
		if gw, ok := netip.AddrFromSlice(gwIP); ok {
			gw = gw.Unmap()
			routes[family(gw)] = append(routes[family(gw)], gw.String())
		}
	}

	// The pod's interfaces are those with a sandbox. Some plugins leave the sandbox out; then
	// the interface named as the attachment's is taken to be the pod's.
	var entries []Status
	index := map[int]int{} // result interface index -> entry
	for _, pass := range []func(*current.Interface) bool{
		func(iface *current.Interface) bool { return iface.Sandbox != "" },
		func(iface *current.Interface) bool { return iface.Name == o.Ifname },
	} {
		for i, iface := range res.Interfaces {
			if iface != nil && pass(iface) {
				index[i] = len(entries)
				entries = append(entries, Status{Name: o.Network, Interface: iface.Name, Mac: iface.Mac, MTU: iface.Mtu})
			}
		}
		if len(entries) > 0 {
			break
		}
	}
	if len(entries) == 0 {
		entries = []Status{{Name: o.Network, Interface: o.Ifname}}
	}
	primary := 0
	for i, e := range entries {
		if e.Interface == o.Ifname {
			primary = i
			break
		}
	}
	for _, ipc := range res.IPs {
		if ipc == nil || ipc.Address.IP == nil {
			continue
		}
		e, ok := primary, ipc.Interface == nil || len(index) == 0
		if !ok {
			e, ok = index[*ipc.Interface]
		}
		if ok { // addresses of host-side interfaces are not the pod's
			entries[e].IPs = append(entries[e].IPs, ipc.Address.IP.String())
		}
	}
	if dns := res.DNS; len(dns.Nameservers)+len(dns.Search)+len(dns.Options) > 0 || dns.Domain != "" {
		entries[primary].DNS = &nadv1.DNS{
			Nameservers: append([]string(nil), dns.Nameservers...),
			Domain:      dns.Domain,
			Search:      append([]string(nil), dns.Search...),
			Options:     append([]string(nil), dns.Options...),
		}
	}
	return entries, primary, routes, nil
}

// StatusAnnotation renders statuses as the value of the network-status annotation, indented as
// Multus writes it so that it reads well in kubectl output.
func StatusAnnotation(statuses []Status) (string, error) {
	if statuses == nil {
		statuses = []Status{}
	}
	b, err := json.MarshalIndent(statuses, "", "    ")
	if err != nil {
		return "", fmt.Errorf("render network-status: %w", err)
	}
	return string(b), nil
}

// ipConfigGateway returns the gateway of the first address of the given family in res that has
// one, or nil.
func ipConfigGateway(res *current.Result, v4 bool) net.IP {
	for _, ipc := range res.IPs {
		if ipc != nil && ipc.Gateway != nil && (ipc.Gateway.To4() != nil) == v4 {
			return ipc.Gateway
		}
	}
	return nil
}
