package npwg

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"

	"github.com/loom-cni/loom/delegate"
)

// result parses a plugin's stdout of the given CNI version, as libcni would.
func result(t *testing.T, cniVersion, stdout string) types.Result {
	t.Helper()
	r, err := version.NewResult(cniVersion, []byte(stdout))
	if err != nil {
		t.Fatalf("parse %s result: %v", cniVersion, err)
	}
	return r
}

func TestNetworkStatusAcrossCNIVersions(t *testing.T) {
	// The same attachment as each CNI version reports it: a veth whose host side has no
	// sandbox, an IPv4 and an IPv6 address, default routes and DNS.
	withInterfaces := `{"cniVersion":"%s",
		"interfaces":[{"name":"veth1234","mac":"aa:aa:aa:aa:aa:aa"},{"name":"eth0","mac":"02:00:00:00:00:01","sandbox":"/var/run/netns/p"%s}],
		"ips":[{%s"interface":1,"address":"10.0.0.5/24","gateway":"10.0.0.1"},{%s"interface":1,"address":"2001:db8::5/64"}],
		"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"},{"dst":"10.96.0.0/12","gw":"10.0.0.2"},{"dst":"::/0","gw":"2001:db8::1"}],
		"dns":{"nameservers":["10.96.0.10"],"search":["svc.cluster.local"]}}`
	full := Status{
		Name: "kube-system/loom", Interface: "eth0", Mac: "02:00:00:00:00:01", Default: true,
		IPs:          []string{"10.0.0.5", "2001:db8::5"},
		DNS:          &nadv1.DNS{Nameservers: []string{"10.96.0.10"}, Search: []string{"svc.cluster.local"}},
		DefaultRoute: []string{"10.0.0.1", "2001:db8::1"},
	}
	withMTU := full
	withMTU.MTU = 1450
	noInterfaces := full // 0.2.0 results know no interfaces, hence no MAC
	noInterfaces.Mac = ""

	tests := []struct {
		version string
		stdout  string
		want    Status
	}{
		{"0.2.0", `{"cniVersion":"0.2.0","ip4":{"ip":"10.0.0.5/24","gateway":"10.0.0.1","routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"}]},` +
			`"ip6":{"ip":"2001:db8::5/64","routes":[{"dst":"::/0","gw":"2001:db8::1"}]},"dns":{"nameservers":["10.96.0.10"],"search":["svc.cluster.local"]}}`, noInterfaces},
		{"0.3.1", sprintf(withInterfaces, "0.3.1", "", `"version":"4",`, `"version":"6",`), full},
		{"0.4.0", sprintf(withInterfaces, "0.4.0", "", `"version":"4",`, `"version":"6",`), full},
		{"1.0.0", sprintf(withInterfaces, "1.0.0", `,"mtu":1450`, "", ""), withMTU},
		{"1.1.0", sprintf(withInterfaces, "1.1.0", `,"mtu":1450`, "", ""), withMTU},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			o := delegate.Outcome{
				Spec:   delegate.Spec{Network: "kube-system/loom", Ifname: "eth0", Default: true},
				Result: result(t, tt.version, tt.stdout),
			}
			got, err := NetworkStatus([]delegate.Outcome{o})
			if err != nil {
				t.Fatalf("NetworkStatus: %v", err)
			}
			if !reflect.DeepEqual(got, []Status{tt.want}) {
				t.Errorf("got  %+v\nwant %+v", got, []Status{tt.want})
			}
		})
	}
}

func sprintf(format string, args ...any) string {
	return strings.NewReplacer("\n", "", "\t", "").Replace(fmt.Sprintf(format, args...))
}

func TestNetworkStatus(t *testing.T) {
	primary := `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/ns"}],` +
		`"ips":[{"interface":0,"address":"10.0.0.5/24"},{"interface":0,"address":"fd00::5/64"}],` +
		`"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"},{"dst":"::/0","gw":"fd00::1"},{"dst":"0.0.0.0/8","gw":"10.0.0.9"}]}`
	secondary := `{"cniVersion":"0.4.0","interfaces":[{"name":"net1","mac":"02:00:00:00:00:02","sandbox":"/ns"}],` +
		`"ips":[{"version":"4","interface":0,"address":"192.168.1.5/24","gateway":"192.168.1.1"}],` +
		`"routes":[{"dst":"0.0.0.0/0","gw":"192.168.1.1"}]}`
	defaultSpec := delegate.Spec{Network: "kube-system/loom", Ifname: "eth0", Default: true}
	secondarySpec := delegate.Spec{Network: "web/net-a", Ifname: "net1"}

	tests := []struct {
		name     string
		outcomes func(t *testing.T) []delegate.Outcome
		want     []Status
	}{
		{
			name: "secondaries keep their own default routes out",
			outcomes: func(t *testing.T) []delegate.Outcome {
				return []delegate.Outcome{
					{Spec: defaultSpec, Result: result(t, "1.0.0", primary)},
					{Spec: secondarySpec, Result: result(t, "0.4.0", secondary)},
				}
			},
			want: []Status{
				{Name: "kube-system/loom", Interface: "eth0", IPs: []string{"10.0.0.5", "fd00::5"}, Default: true, DefaultRoute: []string{"10.0.0.1", "fd00::1"}},
				{Name: "web/net-a", Interface: "net1", Mac: "02:00:00:00:00:02", IPs: []string{"192.168.1.5"}},
			},
		},
		{
			name: "requested default route moves one family",
			outcomes: func(t *testing.T) []delegate.Outcome {
				s := secondarySpec
				s.DefaultRoute = []string{"::ffff:192.168.1.254"} // shown as the IPv4 address it is
				return []delegate.Outcome{
					{Spec: defaultSpec, Result: result(t, "1.0.0", primary)},
					{Spec: s, Result: result(t, "0.4.0", secondary)},
				}
			},
			want: []Status{
				{Name: "kube-system/loom", Interface: "eth0", IPs: []string{"10.0.0.5", "fd00::5"}, Default: true, DefaultRoute: []string{"fd00::1"}},
				{Name: "web/net-a", Interface: "net1", Mac: "02:00:00:00:00:02", IPs: []string{"192.168.1.5"}, DefaultRoute: []string{"192.168.1.254"}},
			},
		},
		{
			name: "requested default route on the default network itself",
			outcomes: func(t *testing.T) []delegate.Outcome {
				s := defaultSpec
				s.DefaultRoute = []string{"10.0.0.254"}
				return []delegate.Outcome{{Spec: s, Result: result(t, "1.0.0", primary)}}
			},
			want: []Status{{Name: "kube-system/loom", Interface: "eth0", IPs: []string{"10.0.0.5", "fd00::5"}, Default: true, DefaultRoute: []string{"10.0.0.254", "fd00::1"}}},
		},
		{
			name: "default route without gw goes through the address's gateway",
			outcomes: func(t *testing.T) []delegate.Outcome {
				r := `{"cniVersion":"1.1.0","interfaces":[{"name":"cni0"},{"name":"eth0","sandbox":"/ns"}],` +
					`"ips":[{"interface":1,"address":"10.244.1.3/24","gateway":"10.244.1.1"}],"routes":[{"dst":"0.0.0.0/0"}]}`
				return []delegate.Outcome{{Spec: defaultSpec, Result: result(t, "1.1.0", r)}}
			},
			want: []Status{{Name: "kube-system/loom", Interface: "eth0", IPs: []string{"10.244.1.3"}, Default: true, DefaultRoute: []string{"10.244.1.1"}}},
		},
		{
			name: "no result and device info",
			outcomes: func(t *testing.T) []delegate.Outcome {
				return []delegate.Outcome{
					{Spec: defaultSpec},
					{Spec: secondarySpec, DeviceInfo: json.RawMessage(` { "type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:01:00.1"} } `)},
				}
			},
			want: []Status{
				{Name: "kube-system/loom", Interface: "eth0", Default: true},
				{Name: "web/net-a", Interface: "net1", DeviceInfo: json.RawMessage(`{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:01:00.1"}}`)},
			},
		},
		{
			name: "several pod interfaces in one result",
			outcomes: func(t *testing.T) []delegate.Outcome {
				r := `{"cniVersion":"1.1.0","interfaces":[{"name":"host0"},{"name":"net1a","sandbox":"/ns"},{"name":"net1","sandbox":"/ns","mtu":9000}],` +
					`"ips":[{"interface":0,"address":"169.254.0.1/32"},{"interface":1,"address":"10.9.0.1/24"},{"address":"10.9.0.2/24"},{"interface":2,"address":"10.9.0.3/24"}],` +
					`"dns":{"domain":"example.com"}}`
				return []delegate.Outcome{{Spec: defaultSpec}, {Spec: secondarySpec, Result: result(t, "1.1.0", r)}}
			},
			want: []Status{
				{Name: "kube-system/loom", Interface: "eth0", Default: true},
				{Name: "web/net-a", Interface: "net1a", IPs: []string{"10.9.0.1"}},
				{Name: "web/net-a", Interface: "net1", MTU: 9000, IPs: []string{"10.9.0.2", "10.9.0.3"}, DNS: &nadv1.DNS{Domain: "example.com"}},
			},
		},
		{
			name: "plugin that sets no sandbox",
			outcomes: func(t *testing.T) []delegate.Outcome {
				r := `{"cniVersion":"0.3.1","interfaces":[{"name":"vethX"},{"name":"net1","mac":"02:00:00:00:00:09"}],` +
					`"ips":[{"version":"4","interface":1,"address":"10.9.0.1/24"},{"version":"4","interface":0,"address":"169.254.0.1/32"}]}`
				return []delegate.Outcome{{Spec: secondarySpec, Result: result(t, "0.3.1", r)}}
			},
			want: []Status{{Name: "web/net-a", Interface: "net1", Mac: "02:00:00:00:00:09", IPs: []string{"10.9.0.1"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NetworkStatus(tt.outcomes(t))
			if err != nil {
				t.Fatalf("NetworkStatus: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			defaults := 0
			for _, s := range got {
				if s.Default {
					defaults++
				}
			}
			if wantDefaults := countDefaults(tt.want); defaults != wantDefaults {
				t.Errorf("%d entries say default, want %d", defaults, wantDefaults)
			}
		})
	}
}

func countDefaults(statuses []Status) int {
	n := 0
	for _, s := range statuses {
		if s.Default {
			n++
		}
	}
	return n
}

func TestNetworkStatusErrors(t *testing.T) {
	dflt := delegate.Spec{Network: "a", Ifname: "eth0", Default: true}
	tests := []struct {
		name     string
		outcomes []delegate.Outcome
	}{
		{"two defaults", []delegate.Outcome{{Spec: dflt}, {Spec: dflt}}},
		{"two carriers of the IPv4 default route", []delegate.Outcome{
			{Spec: delegate.Spec{Network: "a", Ifname: "net1", DefaultRoute: []string{"10.0.0.1"}}},
			{Spec: delegate.Spec{Network: "b", Ifname: "net2", DefaultRoute: []string{"10.1.0.1"}}}}},
		{"bad gateway", []delegate.Outcome{{Spec: delegate.Spec{Network: "a", Ifname: "net1", DefaultRoute: []string{"gw"}}}}},
		{"device-info not an object", []delegate.Outcome{{Spec: dflt, DeviceInfo: json.RawMessage(`["pci"]`)}}},
		{"device-info not JSON", []delegate.Outcome{{Spec: dflt, DeviceInfo: json.RawMessage(`{pci`)}}},
		{"result of an unknown version", []delegate.Outcome{{Spec: dflt, Result: fakeResult{}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := NetworkStatus(tt.outcomes); err == nil {
				t.Errorf("NetworkStatus = %+v, want an error", got)
			}
		})
	}
}

// fakeResult is a result of a CNI version no converter knows.
type fakeResult struct{ types.Result }

func (fakeResult) Version() string { return "9.9.9" }

func TestStatusAnnotation(t *testing.T) {
	got, err := StatusAnnotation([]Status{
		{Name: "kube-system/loom", Interface: "eth0", IPs: []string{"10.0.0.5"}, Default: true, DefaultRoute: []string{"10.0.0.1"}},
		{Name: "web/net-a", Interface: "net1", DeviceInfo: json.RawMessage(`{"type":"pci"}`)},
	})
	if err != nil {
		t.Fatalf("StatusAnnotation: %v", err)
	}
	var parsed []map[string]any
	if err := json.Unmarshal([]byte(got), &parsed); err != nil {
		t.Fatalf("annotation is not JSON: %v\n%s", err, got)
	}
	want := []map[string]any{
		{"name": "kube-system/loom", "interface": "eth0", "ips": []any{"10.0.0.5"}, "default": true, "default-route": []any{"10.0.0.1"}},
		{"name": "web/net-a", "interface": "net1", "device-info": map[string]any{"type": "pci"}},
	}
	if !reflect.DeepEqual(parsed, want) {
		t.Errorf("annotation\n%s\nparses to %v\nwant %v", got, parsed, want)
	}
	if empty, err := StatusAnnotation(nil); err != nil || empty != "[]" {
		t.Errorf("StatusAnnotation(nil) = %q, %v; want []", empty, err)
	}
}
