package npwg

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/utils"
	"k8s.io/apimachinery/pkg/util/validation"
)

// validate checks every field of a freshly decoded Selection, puts the namespace default in
// place and canonicalizes addresses. It is the single place both annotation formats meet.
func (s *Selection) validate(defaultNamespace string) error {
	if s.Name == "" {
		return problemf(`give the network's name ("name" in JSON)`, "no network name")
	}
	if err := checkName(s.Name); err != nil {
		return err
	}
	if s.Namespace == "" {
		s.Namespace = defaultNamespace
	}
	if err := checkNamespace(s.Namespace); err != nil {
		return err
	}
	if s.Interface != "" {
		if err := checkIfname(s.Interface); err != nil {
			return err
		}
	}
	if err := s.validateAddresses(); err != nil {
		return err
	}
	for i := range s.PortMappings {
		if err := checkPortMapping(&s.PortMappings[i], i); err != nil {
			return err
		}
	}
	if bw := s.Bandwidth; bw != nil {
		if err := checkRateBurst("ingress", bw.IngressRate, bw.IngressBurst); err != nil {
			return err
		}
		if err := checkRateBurst("egress", bw.EgressRate, bw.EgressBurst); err != nil {
			return err
		}
	}
	if s.IPAMClaimReference != "" {
		if msgs := validation.IsDNS1123Subdomain(s.IPAMClaimReference); len(msgs) > 0 {
			return problemf("use the name of an IPAMClaim in the pod's namespace",
				`"ipam-claim-reference" %q is not a valid object name: %s`, s.IPAMClaimReference, joinK8sMessages(msgs))
		}
		if len(s.IPs) > 0 {
			return problemf(`remove "ips"; the claim decides the addresses`,
				`"ips" and "ipam-claim-reference" are both set, but the addresses of an attachment come from one source`)
		}
	}
	return nil
}

func (s *Selection) validateAddresses() error {
	seen := map[netip.Addr]bool{}
	for i, str := range s.IPs {
		canon, addr, err := parseRequestedIP(str)
		if err != nil {
			return problemf(`write each of "ips" as an address such as 10.1.2.3 or 2001:db8::3, optionally with a prefix length such as /24`,
				`"ips"[%d] %q: %v`, i, str, err)
		}
		if seen[addr] {
			return problemf("list each address once", `"ips" lists %s twice`, addr)
		}
		seen[addr] = true
		s.IPs[i] = canon
	}
	if s.MAC != "" {
		mac, err := net.ParseMAC(s.MAC)
		switch {
		case err != nil || len(mac) != 6:
			return problemf("write a 48-bit MAC address such as 02:00:00:00:00:01", `"mac" %q is not a 48-bit MAC address`, s.MAC)
		case mac[0]&1 == 1:
			return problemf("clear the lowest bit of the first octet (02:... is a good local choice)", `"mac" %s is a multicast address`, mac)
		case isZero(mac):
			return problemf("choose a unicast address such as 02:00:00:00:00:01", `"mac" %s is all zeros`, mac)
		}
		s.MAC = mac.String()
	}
	if s.InfinibandGUID != "" {
		guid, err := net.ParseMAC(s.InfinibandGUID)
		if err != nil || len(guid) != 8 || isZero(guid) {
			return problemf("write a non-zero 64-bit GUID such as c2:cb:58:00:00:00:00:01",
				`"infiniband-guid" %q is not a 64-bit GUID`, s.InfinibandGUID)
		}
		s.InfinibandGUID = guid.String()
	}
	var families [2]string
	for i, str := range s.DefaultRoute {
		gw, err := netip.ParseAddr(str)
		if err != nil || gw.Zone() != "" || !gw.Unmap().IsGlobalUnicast() && !gw.Unmap().IsLinkLocalUnicast() {
			return problemf(`write each gateway of "default-route" as a unicast address such as 10.1.2.1, without a prefix length`,
				`"default-route"[%d] %q is not a gateway address`, i, str)
		}
		gw = gw.Unmap()
		f := family(gw)
		if families[f/6] != "" {
			return problemf("keep one gateway per IP family; a pod has one default route per family",
				`"default-route" lists two IPv%d gateways, %s and %s`, f, families[f/6], gw)
		}
		families[f/6] = gw.String()
		s.DefaultRoute[i] = gw.String()
	}
	return nil
}

// parseRequestedIP accepts the forms IPAM plugins take in runtimeConfig "ips": an address, or an
// address with prefix length. It returns the canonical string and the address.
func parseRequestedIP(s string) (string, netip.Addr, error) {
	var addr netip.Addr
	canon := ""
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return "", addr, fmt.Errorf("not an address with prefix length")
		}
		addr, canon = p.Addr(), p.String()
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return "", addr, fmt.Errorf("not an IP address")
		}
		if a.Zone() != "" {
			return "", addr, fmt.Errorf("an address with a zone cannot be assigned to an interface")
		}
		addr, canon = a, a.String()
	}
	if u := addr.Unmap(); u.IsUnspecified() || u.IsMulticast() {
		return "", addr, fmt.Errorf("an unspecified or multicast address cannot be assigned to an interface")
	}
	return canon, addr, nil
}

// family returns 4 or 6.
func family(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 4
	}
	return 6
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func checkPortMapping(pm *PortMapping, i int) error {
	if pm.HostPort == 0 || pm.ContainerPort == 0 {
		return problemf("give both hostPort and containerPort", `"portMappings"[%d] needs hostPort and containerPort`, i)
	}
	switch p := strings.ToLower(pm.Protocol); p {
	case "":
		pm.Protocol = "tcp" // Kubernetes' default protocol for a container port
	case "tcp", "udp", "sctp":
		pm.Protocol = p
	default:
		return problemf("use tcp, udp or sctp", `"portMappings"[%d].protocol %q is not tcp, udp or sctp`, i, pm.Protocol)
	}
	if pm.HostIP != "" {
		a, err := netip.ParseAddr(pm.HostIP)
		if err != nil || a.Zone() != "" {
			return problemf("write hostIP as an address such as 192.0.2.10, or leave it out for all host addresses",
				`"portMappings"[%d].hostIP %q is not an IP address`, i, pm.HostIP)
		}
		pm.HostIP = a.String()
	}
	return nil
}

// checkRateBurst applies the bandwidth plugin's own rules up front, so that a pod is refused
// before anything is attached rather than by the plugin halfway through.
func checkRateBurst(dir string, rate, burst uint64) error {
	const maxBurst = (1<<32 - 1) * 8 // the plugin keeps bursts in bytes in a uint32
	switch {
	case rate != 0 && burst == 0, rate == 0 && burst != 0:
		return problemf(fmt.Sprintf("set both %sRate and %sBurst, or neither", dir, dir),
			`"bandwidth" sets only one of %sRate and %sBurst`, dir, dir)
	case burst >= maxBurst:
		return problemf("keep bursts below 4 GiB", `"bandwidth".%sBurst %d is too large`, dir, burst)
	}
	return nil
}

func checkName(name string) error {
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return problemf("use the name of a NetworkAttachmentDefinition (lowercase letters, digits, '-' and '.')",
			"network name %q is not valid: %s", name, joinK8sMessages(msgs))
	}
	return nil
}

func checkNamespace(ns string) error {
	if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
		return problemf("use the name of a namespace (lowercase letters, digits and '-')",
			"namespace %q is not valid: %s", ns, joinK8sMessages(msgs))
	}
	return nil
}

// checkIfname applies the kernel's rules for interface names, as CNI does.
func checkIfname(ifname string) error {
	if e := utils.ValidateInterfaceName(ifname); e != nil {
		return problemf("use at most 15 characters, none of them '/', ':' or whitespace",
			"interface name %q is not valid: %s", ifname, e.Msg)
	}
	return nil
}

// joinK8sMessages joins apimachinery's validation messages without the examples and regular
// expressions they end with, which make an event hard to read and add nothing the fix does not say.
func joinK8sMessages(msgs []string) string {
	short := make([]string, len(msgs))
	for i, m := range msgs {
		short[i], _, _ = strings.Cut(m, " (e.g.")
	}
	return strings.Join(short, "; ")
}
