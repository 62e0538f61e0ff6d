package tenants

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestParseNodeResources(t *testing.T) {
	o := &Object{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: validSpec()}
	o.Spec.NodeResources = &NodeResourcesSpec{
		Masters:     []string{"eth1", "eth1", "loom.vxlan", "bond0.100", "way-too-long-name", "a/b", "lo"},
		Bridges:     []string{"br-a", "cni0", "loom0123456789a", ""},
		HostDevices: []string{"ens2f1", "with space"},
		HostPorts:   []string{"30000-30100", "30050-30200", "8080", "0", "70000", "9-3", "x", "1-2-3"},
		Plugins:     []string{"ptp", "ptp", "../evil", "loom", "macvlan", "/opt/cni/bin/x", "my.plugin_v2"},
	}
	got, problems := Parse(o)
	want := NodeResources{
		Masters:     []string{"eth1", "bond0.100"},
		Bridges:     []string{"br-a"},
		HostDevices: []string{"ens2f1"},
		HostPorts:   []PortRange{{8080, 8080}, {30000, 30200}},
		Plugins:     []string{"ptp", "my.plugin_v2"},
	}
	if !reflect.DeepEqual(got.NodeResources, want) {
		t.Errorf("NodeResources = %+v\nwant %+v", got.NodeResources, want)
	}
	wantFields := []string{
		"spec.nodeResources.masters[2]", "spec.nodeResources.masters[4]", "spec.nodeResources.masters[5]", "spec.nodeResources.masters[6]",
		"spec.nodeResources.bridges[1]", "spec.nodeResources.bridges[2]", "spec.nodeResources.bridges[3]",
		"spec.nodeResources.hostDevices[1]",
		"spec.nodeResources.hostPorts[3]", "spec.nodeResources.hostPorts[4]", "spec.nodeResources.hostPorts[5]", "spec.nodeResources.hostPorts[6]", "spec.nodeResources.hostPorts[7]",
		"spec.nodeResources.plugins[2]", "spec.nodeResources.plugins[3]", "spec.nodeResources.plugins[4]", "spec.nodeResources.plugins[5]",
	}
	var fields []string
	for _, p := range problems {
		fields = append(fields, p.Field)
	}
	if !slices.Equal(fields, wantFields) {
		t.Errorf("problems at %q\nwant %q\n%v", fields, wantFields, problems)
	}
	for _, p := range problems {
		if p.Field == "spec.nodeResources.masters[2]" && !strings.Contains(p.Message, "Loom's own") {
			t.Errorf("problem %v does not say loom.vxlan is Loom's", p)
		}
	}
}

func TestPluginType(t *testing.T) {
	for _, ok := range []string{"macvlan", "host-device", "loom-sriov", "my.plugin_v2", "a", "X1"} {
		if err := CheckPluginType(ok); err != nil {
			t.Errorf("CheckPluginType(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "../x", "..", ".", "/bin/sh", "a/b", `a\b`, ".hidden", "-x", "a..b", "a b", "é", "a\x00", strings.Repeat("a", 256)} {
		if err := CheckPluginType(bad); err == nil {
			t.Errorf("CheckPluginType(%q) = nil, want an error", bad)
		}
	}
}

// nodeDirectory is the cluster the node resource tests decide in:
//
//	tenant a: namespace team-a; masters eth1 and eth0; bridges br-a and br-both; host device
//	          ens2f1; host ports 30000-30100 and 4000-5000; plugin ptp
//	tenant b: namespace team-b; bridge br-both, host device ens2f1, no masters
//	platform: infra
func nodeDirectory(t *testing.T) *Directory {
	a := tenant(t, "a", func(s *Spec) {
		s.NodeResources = &NodeResourcesSpec{Masters: []string{"eth1", "eth0"}, Bridges: []string{"br-a", "br-both"},
			HostDevices: []string{"ens2f1", "ens3"}, HostPorts: []string{"30000-30100", "4000-5000"}, Plugins: []string{"ptp"}}
		s.SharedNetworks = []string{"infra/host"}
	})
	b := tenant(t, "b", func(s *Spec) {
		s.NodeResources = &NodeResourcesSpec{Bridges: []string{"br-both"}, HostDevices: []string{"ens2f1"}}
	})
	return NewDirectory([]Tenant{a, b}, map[string]map[string]string{
		"team-a": {"tenant": "a"}, "team-b": {"tenant": "b"}, "infra": {},
	})
}

func TestCheckNetworkNodeResources(t *testing.T) {
	d := nodeDirectory(t)
	tests := []struct {
		name   string
		ns     string
		config string
		// field and grant are the denial's; field empty: allowed.
		field, grant string
		want         string
	}{
		{name: "macvlan on a granted master", ns: "team-a", config: `{"type":"macvlan","master":"eth1","ipam":{"type":"static"}}`},
		{name: "macvlan in a list on a granted master", ns: "team-a", config: `{"plugins":[{"type":"macvlan","master":"eth0"},{"type":"tuning"}]}`},
		{name: "macvlan on a master in the pod", ns: "team-b", config: `{"type":"macvlan","master":"net1","linkInContainer":true}`},
		{
			name: "macvlan on a master not granted", ns: "team-a", config: `{"type":"macvlan","master":"eth2"}`,
			field: "master", grant: "spec.nodeResources.masters",
			want: `network team-a/n is not allowed: tenant a: "master" of the macvlan plugin names node interface "eth2", which is not among the tenant's masters (eth1, eth0) (fix: use one of the tenant's masters, or add eth2 to spec.nodeResources.masters of tenant a)`,
		},
		{
			name: "macvlan without a master takes the default-route interface", ns: "team-a", config: `{"type":"macvlan"}`,
			field: "master", grant: "spec.nodeResources.masters", want: "names no master, so it would take the node's default-route interface",
		},
		{
			name: "ipvlan in a tenant without masters", ns: "team-b", config: `{"plugins":[{"type":"ipvlan","master":"eth0"}]}`,
			field: "plugins[0].master", grant: "spec.nodeResources.masters", want: "not among the tenant's masters (none)",
		},
		{
			name: "vlan on Loom's VXLAN device", ns: "team-a", config: `{"type":"vlan","master":"loom.vxlan","vlanId":0}`,
			field: "master", want: `names "loom.vxlan": loom.vxlan is Loom's own`,
		},
		{
			name: "linkInContainer not a boolean", ns: "team-a", config: `{"type":"macvlan","master":"eth9","linkInContainer":"true"}`,
			field: "master", grant: "spec.nodeResources.masters", want: `"eth9"`,
		},
		{
			name: "master in two spellings", ns: "team-a", config: `{"type":"macvlan","master":"eth1","Master":"eth7"}`,
			field: "Master", grant: "spec.nodeResources.masters", want: `"eth7"`,
		},
		{name: "bridge granted", ns: "team-a", config: `{"type":"bridge","bridge":"br-a","ipam":{"type":"host-local","ranges":[[{"subnet":"10.9.0.0/24"}]]}}`},
		{
			name: "bridge of another tenant", ns: "team-b", config: `{"type":"bridge","bridge":"br-a"}`,
			field: "bridge", grant: "spec.nodeResources.bridges", want: `names node bridge "br-a", which is not among the tenant's bridges (br-both)`,
		},
		{
			name: "bridge granted to two tenants", ns: "team-a", config: `{"type":"bridge","bridge":"br-both"}`,
			field: "bridge", grant: "spec.nodeResources.bridges", want: "which tenants a, b are all granted, so it is none of theirs",
		},
		{
			name: "bridge without a name is cni0", ns: "team-a", config: `{"cniVersion":"1.0.0","plugins":[{"type":"tuning"},{"type":"bridge"}]}`,
			field: "plugins[1].bridge", want: `names "cni0": cni0 is the bridge of every bridge NAD`,
		},
		{
			name: "ovs bridge", ns: "team-a", config: `{"type":"ovs","bridge":"br-ovs"}`,
			field: "bridge", grant: "spec.nodeResources.bridges", want: `node bridge "br-ovs"`,
		},
		{name: "host device granted", ns: "team-a", config: `{"type":"host-device","device":"ens3"}`},
		{name: "host device from the NAD's pool", ns: "team-a", config: `{"type":"host-device"}`},
		{
			name: "host device eth0", ns: "team-a", config: `{"type":"host-device","device":"eth0"}`,
			field: "device", grant: "spec.nodeResources.hostDevices", want: `"device" of the host-device plugin names node device "eth0", which is not among the tenant's hostDevices (ens2f1, ens3)`,
		},
		{
			name: "host device granted to two tenants", ns: "team-b", config: `{"type":"host-device","device":"ens2f1"}`,
			field: "device", grant: "spec.nodeResources.hostDevices", want: "tenants a, b are all granted",
		},
		{
			name: "host device by PCI address", ns: "team-a", config: `{"type":"host-device","pciBusID":"0000:03:00.0"}`,
			field: "pciBusID", grant: "spec.sharedNetworks", want: `"pciBusID" of the host-device plugin is "0000:03:00.0": it picks a node device by PCI address`,
		},
		{name: "portmap in a granted range", ns: "team-a", config: `{"plugins":[{"type":"macvlan","master":"eth1"},{"type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":30001,"containerPort":80,"protocol":"tcp"}]}}]}`},
		{name: "portmap from the annotation", ns: "team-b", config: `{"plugins":[{"type":"dummy"},{"type":"portmap","capabilities":{"portMappings":true}}]}`},
		{
			name: "portmap on VXLAN's port", ns: "team-a", config: `{"plugins":[{"type":"dummy"},{"type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":4789,"containerPort":4789,"protocol":"udp"}]}}]}`,
			field: "plugins[1].runtimeConfig.portMappings[0].hostPort",
			want:  "maps node port 4789/udp, the node's port for VXLAN (Loom's vxlan mode), which is never a tenant's",
		},
		{
			name: "portmap on the kubelet's port", ns: "team-a", config: `{"type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":10250,"containerPort":1}]}}`,
			field: "runtimeConfig.portMappings[0].hostPort", want: "10250/tcp, the node's port for the kubelet,",
		},
		{
			name: "portmap outside the granted range", ns: "team-a", config: `{"type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":30001,"containerPort":1},{"hostPort":8080,"containerPort":1}]}}`,
			field: "runtimeConfig.portMappings[1].hostPort", grant: "spec.nodeResources.hostPorts",
			want: "maps node port 8080/tcp, which is outside the tenant's host ports (4000-5000, 30000-30100)",
		},
		{
			name: "portmap with iptables conditions", ns: "team-a", config: `{"type":"portmap","conditionsV4":["-j","ACCEPT"]}`,
			field: "conditionsV4", grant: "spec.sharedNetworks", want: "adds iptables match arguments",
		},
		{
			name: "type with a path", ns: "team-a", config: `{"type":"../../usr/bin/x"}`,
			field: "type", want: `"type" is ../../usr/bin/x, not a plain plugin name`,
		},
		{
			name: "type with a path in a nested delegate", ns: "team-a", config: `{"type":"ptp","delegates":[{"type":"dummy"},{"type":"/bin/sh"}]}`,
			field: "delegates[1].type", want: "not a plain plugin name",
		},
		{
			name: "type that is not a string", ns: "team-a", config: `{"plugins":[{"type":["macvlan"]}]}`,
			field: "plugins[0].type", want: "not a plain plugin name",
		},
		{
			name: "IPAM type with a path", ns: "team-a", config: `{"type":"macvlan","master":"eth1","ipam":{"type":"../x"}}`,
			field: "ipam.type", want: "not a plain plugin name",
		},
		{name: "granted plugin", ns: "team-a", config: `{"type":"ptp","ipam":{"type":"host-local","ranges":[[{"subnet":"10.9.0.0/24"}]]}}`},
		{
			name: "plugin not granted", ns: "team-b", config: `{"type":"ptp"}`,
			field: "type", grant: "spec.nodeResources.plugins", want: "is a plugin Loom does not know to keep to the pod, and not among the tenant's plugins (none)",
		},
		{
			name: "unknown IPAM plugin", ns: "team-b", config: `{"type":"dummy","ipam":{"type":"whereabouts"}}`,
			field: "ipam.type", grant: "spec.nodeResources.plugins", want: "whereabouts plugin is a plugin Loom does not know",
		},
		{
			name: "host-local data directory", ns: "team-a", config: `{"type":"macvlan","master":"eth1","ipam":{"type":"host-local","dataDir":"/etc"}}`,
			field: "ipam.dataDir", grant: "spec.sharedNetworks", want: "stores addresses in a directory of the node",
		},
		{
			name: "sriov VF by PCI address", ns: "team-a", config: `{"type":"loom-sriov","deviceID":"0000:03:02.1"}`,
			field: "deviceID", grant: "spec.sharedNetworks", want: "picks a VF by PCI address",
		},
		{
			name: "sriov spoof check off", ns: "team-a", config: `{"type":"sriov","spoofchk":"off"}`,
			field: "spoofchk", grant: "spec.sharedNetworks", want: "turns the VF's spoof check off",
		},
		{name: "sriov spoof check on", ns: "team-a", config: `{"type":"sriov","spoofchk":"on","trust":"off"}`},
		{
			name: "literal runtimeConfig", ns: "team-a", config: `{"type":"macvlan","master":"eth1","runtimeConfig":{"ips":["10.0.0.9/24"]}}`,
			field: "runtimeConfig.ips", grant: "spec.sharedNetworks", want: "is the container runtime's to set",
		},
		{name: "platform NAD asks anything", ns: "infra", config: `{"plugins":[{"type":"host-device","device":"eth0"},{"type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":4789,"containerPort":1}]}},{"type":"../x"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := NetworkOf(nad(tt.ns, "n", tt.config, nil))
			if err != nil {
				t.Fatalf("NetworkOf() = %v", err)
			}
			err = d.CheckNetwork(n)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("CheckNetwork() = %v, want allowed", err)
				}
				return
			}
			var denial *Denial
			if !errors.As(err, &denial) {
				t.Fatalf("CheckNetwork() = %v, want a *Denial", err)
			}
			if denial.Network != tt.ns+"/n" || denial.Field != tt.field || denial.Grant != tt.grant || denial.Tenant == "" || denial.Fix == "" {
				t.Errorf("denial names network %q field %q grant %q tenant %q, want %s/n %q %q",
					denial.Network, denial.Field, denial.Grant, denial.Tenant, tt.ns, tt.field, tt.grant)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("CheckNetwork() = %q\nwant it to contain %q and the field", err, tt.want)
			}
			if tt.grant != "" && !strings.Contains(denial.Fix, tt.grant) && tt.grant != "spec.nodeResources.masters" || strings.Contains(err.Error(), "\n") {
				t.Errorf("denial %q does not name %s in its fix, or is not one line", err, tt.grant)
			}
		})
	}
}

// A pod is checked against the node resources of the tenant whose namespace its NADs are in,
// and its own host ports against its tenant's grant; a platform pod is not.
func TestCheckPodNodeResources(t *testing.T) {
	d := nodeDirectory(t)
	network := func(ns, config string) Network {
		n, err := NetworkOf(nad(ns, "n", config, nil))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	hostDev := network("team-a", `{"type":"host-device","device":"eth0"}`)
	platform := network("infra", `{"type":"host-device","device":"eth0"}`)
	platform.Ref.Name = "host" // shared with tenant a
	tests := []struct {
		name         string
		req          PodRequest
		field, grant string
		want         string
	}{
		{
			name: "NAD that would not be admitted", req: PodRequest{Namespace: "team-a", Name: "p", Networks: []Network{hostDev}},
			field: "device", grant: "spec.nodeResources.hostDevices", want: `pod team-a/p may not use network team-a/n: tenant a: "device" of the host-device plugin names node device "eth0"`,
		},
		{name: "shared platform NAD", req: PodRequest{Namespace: "team-a", Name: "p", Networks: []Network{platform}}},
		{name: "granted host port", req: PodRequest{Namespace: "team-a", Name: "p", HostPorts: []HostPort{{Field: "spec.containers[app].ports[0].hostPort", Port: 4500, Protocol: "tcp"}}}},
		{
			name: "container host port on VXLAN", req: PodRequest{Namespace: "team-a", Name: "p", HostPorts: []HostPort{{Field: "spec.containers[app].ports[0].hostPort", Port: 4789, Protocol: "udp"}}},
			field: "spec.containers[app].ports[0].hostPort",
			want:  "spec.containers[app].ports[0].hostPort maps node port 4789/udp, the node's port for VXLAN (Loom's vxlan mode), which is never a tenant's",
		},
		{
			name: "annotation port mapping not granted", req: PodRequest{Namespace: "team-b", Name: "p", HostPorts: []HostPort{{Field: "k8s.v1.cni.cncf.io/networks[0].portMappings[0].hostPort", Port: 30001, Protocol: "tcp"}}},
			field: "k8s.v1.cni.cncf.io/networks[0].portMappings[0].hostPort", grant: "spec.nodeResources.hostPorts", want: "outside the tenant's host ports (none)",
		},
		{name: "platform pod", req: PodRequest{Namespace: "infra", Name: "p", Networks: []Network{platform}, HostPorts: []HostPort{{Port: 4789, Protocol: "udp"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := d.CheckPod(tt.req)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("CheckPod() = %v, want allowed", err)
				}
				return
			}
			var denial *Denial
			if !errors.As(err, &denial) || denial.Pod != tt.req.Namespace+"/p" || denial.Field != tt.field || denial.Grant != tt.grant {
				t.Fatalf("CheckPod() = %#v, want a denial of field %q with grant %q", err, tt.field, tt.grant)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("CheckPod() = %q\nwant it to contain %q", err, tt.want)
			}
		})
	}
}
