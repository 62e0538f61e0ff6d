package npwg

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseNetworks(t *testing.T) {
	tests := []struct {
		name       string
		annotation string
		want       []Selection
	}{
		{name: "absent", annotation: "", want: nil},
		{name: "blank", annotation: "  \t ", want: nil},
		{name: "empty JSON list", annotation: " [ ] ", want: []Selection{}},
		{name: "bare name", annotation: "net-a", want: []Selection{{Namespace: "web", Name: "net-a"}}},
		{name: "namespace and name", annotation: "tenant-x/net-b", want: []Selection{{Namespace: "tenant-x", Name: "net-b"}}},
		{name: "name at interface", annotation: "net-a@data0", want: []Selection{{Namespace: "web", Name: "net-a", Interface: "data0"}}},
		{
			name:       "all short forms with whitespace",
			annotation: " net-a , tenant-x / net-b@data0,\tnet.c @ if1 ,ns/d",
			want: []Selection{
				{Namespace: "web", Name: "net-a"},
				{Namespace: "tenant-x", Name: "net-b", Interface: "data0"},
				{Namespace: "web", Name: "net.c", Interface: "if1"},
				{Namespace: "ns", Name: "d"},
			},
		},
		{
			name:       "same network twice",
			annotation: "net-a,net-a",
			want:       []Selection{{Namespace: "web", Name: "net-a"}, {Namespace: "web", Name: "net-a"}},
		},
		{
			name:       "JSON minimal",
			annotation: `[{"name":"net-a"},{"name":"net-b","namespace":"other","interface":"data0"}]`,
			want: []Selection{
				{Namespace: "web", Name: "net-a"},
				{Namespace: "other", Name: "net-b", Interface: "data0"},
			},
		},
		{
			name: "JSON null values are absent",
			annotation: `[{"name":"net-a","namespace":null,"ips":null,"mac":null,"portMappings":null,` +
				`"bandwidth":null,"cni-args":null,"default-route":null,"interface":null}]`,
			want: []Selection{{Namespace: "web", Name: "net-a"}},
		},
		{
			name:       "claim reference",
			annotation: `[{"name":"net-a","ipam-claim-reference":"vm1.net-a"}]`,
			want:       []Selection{{Namespace: "web", Name: "net-a", IPAMClaimReference: "vm1.net-a"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseNetworks(tt.annotation, "web")
			if err != nil {
				t.Fatalf("ParseNetworks: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestParseNetworksFullElement(t *testing.T) {
	got, err := ParseNetworks(`[{
		"name": "net-a", "namespace": "tenant-x", "interface": "data0",
		"ips": ["10.1.2.3/24", "2001:DB8::3"],
		"mac": "02:AA:bb:cc:dd:ee",
		"default-route": ["::ffff:10.1.2.1", "2001:db8::1"],
		"portMappings": [{"hostPort": 8080, "containerPort": 80}, {"hostPort": 53, "containerPort": 53, "protocol": "UDP", "hostIP": "192.0.2.1"}],
		"bandwidth": {"ingressRate": 1000000, "ingressBurst": 2000000, "egressRate": 0, "egressBurst": 0},
		"cni-args": {"vlan": 100, "nested": {"a": [1, 2]}},
		"infiniband-guid": "C2:CB:58:00:00:00:00:01",
		"ipam-claim-reference": null
	}]`, "web")
	if err != nil {
		t.Fatalf("ParseNetworks: %v", err)
	}
	want := []Selection{{
		Namespace: "tenant-x", Name: "net-a", Interface: "data0",
		IPs:          []string{"10.1.2.3/24", "2001:db8::3"},
		MAC:          "02:aa:bb:cc:dd:ee",
		DefaultRoute: []string{"10.1.2.1", "2001:db8::1"},
		PortMappings: []PortMapping{
			{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
			{HostPort: 53, ContainerPort: 53, Protocol: "udp", HostIP: "192.0.2.1"},
		},
		Bandwidth:      &Bandwidth{IngressRate: 1000000, IngressBurst: 2000000},
		CNIArgs:        map[string]any{"vlan": json.Number("100"), "nested": map[string]any{"a": []any{json.Number("1"), json.Number("2")}}},
		InfinibandGUID: "c2:cb:58:00:00:00:00:01",
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %#v\nwant %#v", got, want)
	}
}

func TestParseNetworksErrors(t *testing.T) {
	long := strings.Repeat("a", 64)
	tests := []struct {
		name       string
		annotation string
		network    string // the network the error must name ("" for the annotation as a whole)
		mention    string // a value the message must quote so the user can find the mistake
	}{
		// comma form
		{"empty item", "net-a,,net-b", "", "item 2"},
		{"trailing comma", "net-a,", "", "item 2"},
		{"empty namespace", "/net-a", "/net-a", "empty namespace"},
		{"two slashes", "a/b/c", "a/b/c", "a/b/c"},
		{"empty interface", "net-a@", "net-a@", "empty interface"},
		{"two ats", "net-a@x@y", "net-a@x@y", "net-a@x@y"},
		{"upper case name", "Net-A", "Net-A", "Net-A"},
		{"underscore name", "net_a", "net_a", "net_a"},
		{"bad namespace", "Tenant/net-a", "Tenant/net-a", "Tenant"},
		{"namespace too long", long + "/net-a", long + "/net-a", long},
		{"interface too long", "net-a@abcdefghijklmnop", "net-a@abcdefghijklmnop", "abcdefghijklmnop"},
		{"interface with colon", "net-a@eth0:1", "net-a@eth0:1", "eth0:1"},
		{"interface dot", "net-a@.", "net-a@.", `"."`},
		{"interface dotdot", "net-a@..", "net-a@..", `".."`},
		{"single JSON object", `{"name":"net-a"}`, "", "[ ]"},
		// JSON form
		{"invalid JSON", `[{"name":"net-a"`, "", "not a valid JSON list"},
		{"trailing garbage", `[{"name":"net-a"}] x`, "", "not a valid JSON list"},
		{"element not object", `["net-a"]`, "", `"net-a"`},
		{"null element", `[null]`, "", "null"},
		{"missing name", `[{"namespace":"web"}]`, "", "no network name"},
		{"empty name", `[{"name":""}]`, "", "no network name"},
		{"name not string", `[{"name":5}]`, "", `"name"`},
		{"unknown key", `[{"name":"net-a","interfce":"x"}]`, "net-a", "interfce"},
		{"key case matters", `[{"Name":"net-a"}]`, "", "Name"},
		{"legacy interfaceRequest", `[{"name":"net-a","interfaceRequest":"x"}]`, "net-a", "interfaceRequest"},
		{"deviceID refused", `[{"name":"net-a","deviceID":"0000:01:00.1"}]`, "net-a", "deviceID"},
		{"repeated key", `[{"name":"net-a","name":"net-b"}]`, "", "twice"},
		{"bad JSON namespace", `[{"name":"net-a","namespace":"a/b"}]`, "net-a", "a/b"},
		{"bad JSON interface", `[{"name":"net-a","interface":"has space"}]`, "net-a", "has space"},
		{"ips not list", `[{"name":"net-a","ips":"10.0.0.1"}]`, "net-a", `"ips"`},
		{"bad IP", `[{"name":"net-a","ips":["10.0.0.300"]}]`, "net-a", "10.0.0.300"},
		{"bad CIDR", `[{"name":"net-a","ips":["10.0.0.1/33"]}]`, "net-a", "10.0.0.1/33"},
		{"zoned IP", `[{"name":"net-a","ips":["fe80::1%eth0"]}]`, "net-a", "fe80::1%eth0"},
		{"unspecified IP", `[{"name":"net-a","ips":["0.0.0.0"]}]`, "net-a", "0.0.0.0"},
		{"multicast IP", `[{"name":"net-a","ips":["ff02::1/64"]}]`, "net-a", "ff02::1/64"},
		{"duplicate IP", `[{"name":"net-a","ips":["10.0.0.1/24","10.0.0.1"]}]`, "net-a", "10.0.0.1"},
		{"bad MAC", `[{"name":"net-a","mac":"02:00:00:00:00"}]`, "net-a", "02:00:00:00:00"},
		{"EUI-64 as MAC", `[{"name":"net-a","mac":"02:00:00:00:00:00:00:01"}]`, "net-a", "02:00:00:00:00:00:00:01"},
		{"multicast MAC", `[{"name":"net-a","mac":"01:00:5e:00:00:01"}]`, "net-a", "01:00:5e:00:00:01"},
		{"broadcast MAC", `[{"name":"net-a","mac":"ff:ff:ff:ff:ff:ff"}]`, "net-a", "ff:ff:ff:ff:ff:ff"},
		{"zero MAC", `[{"name":"net-a","mac":"00:00:00:00:00:00"}]`, "net-a", "00:00:00:00:00:00"},
		{"bad GUID", `[{"name":"net-a","infiniband-guid":"02:00:00:00:00:01"}]`, "net-a", "02:00:00:00:00:01"},
		{"gateway with prefix", `[{"name":"net-a","default-route":["10.0.0.1/24"]}]`, "net-a", "10.0.0.1/24"},
		{"gateway not IP", `[{"name":"net-a","default-route":["gw"]}]`, "net-a", `"gw"`},
		{"gateway multicast", `[{"name":"net-a","default-route":["224.0.0.1"]}]`, "net-a", "224.0.0.1"},
		{"two IPv4 gateways", `[{"name":"net-a","default-route":["10.0.0.1","10.0.1.1"]}]`, "net-a", "10.0.1.1"},
		{"portMappings not list", `[{"name":"net-a","portMappings":{}}]`, "net-a", `"portMappings"`},
		{"port mapping not object", `[{"name":"net-a","portMappings":[80]}]`, "net-a", `"portMappings"[0]`},
		{"port zero", `[{"name":"net-a","portMappings":[{"hostPort":0,"containerPort":80}]}]`, "net-a", "hostPort"},
		{"port missing", `[{"name":"net-a","portMappings":[{"hostPort":8080}]}]`, "net-a", "containerPort"},
		{"port too big", `[{"name":"net-a","portMappings":[{"hostPort":65536,"containerPort":80}]}]`, "net-a", "65536"},
		{"port negative", `[{"name":"net-a","portMappings":[{"hostPort":8080,"containerPort":-1}]}]`, "net-a", "-1"},
		{"port fraction", `[{"name":"net-a","portMappings":[{"hostPort":80.5,"containerPort":80}]}]`, "net-a", "80.5"},
		{"port as string", `[{"name":"net-a","portMappings":[{"hostPort":"80","containerPort":80}]}]`, "net-a", `"80"`},
		{"bad protocol", `[{"name":"net-a","portMappings":[{"hostPort":80,"containerPort":80,"protocol":"icmp"}]}]`, "net-a", "icmp"},
		{"bad host IP", `[{"name":"net-a","portMappings":[{"hostPort":80,"containerPort":80,"hostIP":"host"}]}]`, "net-a", `"host"`},
		{"unknown port key", `[{"name":"net-a","portMappings":[{"hostPort":80,"containerPort":80,"podPort":1}]}]`, "net-a", "podPort"},
		{"negative bandwidth", `[{"name":"net-a","bandwidth":{"ingressRate":-1,"ingressBurst":10}}]`, "net-a", "-1"},
		{"bandwidth rate without burst", `[{"name":"net-a","bandwidth":{"egressRate":1000}}]`, "net-a", "egressRate"},
		{"bandwidth burst too big", `[{"name":"net-a","bandwidth":{"egressRate":1,"egressBurst":34359738360}}]`, "net-a", "34359738360"},
		{"bandwidth unknown key", `[{"name":"net-a","bandwidth":{"rate":1}}]`, "net-a", "rate"},
		{"bandwidth not object", `[{"name":"net-a","bandwidth":5}]`, "net-a", `"bandwidth"`},
		{"cni-args not object", `[{"name":"net-a","cni-args":[1]}]`, "net-a", `"cni-args"`},
		{"claim and ips", `[{"name":"net-a","ips":["10.0.0.1/24"],"ipam-claim-reference":"c"}]`, "net-a", "ipam-claim-reference"},
		{"bad claim name", `[{"name":"net-a","ipam-claim-reference":"Bad_Claim"}]`, "net-a", "Bad_Claim"},
		{"error in second element", `[{"name":"net-a"},{"name":"net-b","mac":"x"}]`, "net-b", "item 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseNetworks(tt.annotation, "web")
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("ParseNetworks = %v, %v; want an *Error", got, err)
			}
			if e.Network != tt.network {
				t.Errorf("Network = %q, want %q (error: %v)", e.Network, tt.network, err)
			}
			if e.Fix == "" || e.Pod != "" {
				t.Errorf("Fix = %q, Pod = %q: want a fix and no pod", e.Fix, e.Pod)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.mention) || !strings.Contains(msg, "annotation k8s.v1.cni.cncf.io/networks") {
				t.Errorf("message %q does not name the annotation and %q", msg, tt.mention)
			}
			if strings.ToLower(msg[:1]) != msg[:1] || strings.HasSuffix(msg, ".") {
				t.Errorf("message %q must start lowercase and not end with a period", msg)
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"everything", &Error{Pod: "default/web", Network: "other/net-a", Problem: "it is broken", Fix: "mend it"},
			`pod default/web: network "other/net-a": it is broken: mend it`},
		{"no pod", &Error{Network: "net-a", Problem: "it is broken", Fix: "mend it"}, `network "net-a": it is broken: mend it`},
		{"no network", &Error{Pod: "default/web", Problem: "it is broken"}, `pod default/web: it is broken`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
	cause := errors.New("cause")
	if !errors.Is(&Error{Err: cause}, cause) {
		t.Error("errors.Is does not see the cause through *Error")
	}
}

func TestAbbreviate(t *testing.T) {
	long := strings.Repeat("é", 40) // 80 bytes: the cut falls inside a rune
	got := abbreviate([]byte(long))
	if !strings.HasSuffix(got, "...") || len(got) > 67 || !utf8.ValidString(got) {
		t.Errorf("abbreviate(%q) = %q", long, got)
	}
	if got := abbreviate([]byte(" short ")); got != "short" {
		t.Errorf("abbreviate(short) = %q", got)
	}
}
