package sim

import (
	"encoding/json"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"sigs.k8s.io/yaml"

	"github.com/loom-cni/loom/daemon"
	"github.com/loom-cni/loom/deployments"
)

func TestOptionsRejectDirsNodesMountOver(t *testing.T) {
	for _, dir := range []string{"/run/loom", "/var/lib/cni/x", "/etc/cni", "/etc/loom"} {
		_, err := Options{Dir: dir}.withDefaults()
		if err == nil || !strings.Contains(err.Error(), "which nodes mount over") {
			t.Errorf("dir %s: %v", dir, err)
		}
	}
	_, err := Options{Dir: t.TempDir(), Nodes: 51}.withDefaults()
	if err == nil || !strings.Contains(err.Error(), "nodes: 51") {
		t.Errorf("51 nodes: %v", err)
	}
	_, err = Options{Dir: t.TempDir(), Mode: "calico"}.withDefaults()
	if err == nil || !strings.Contains(err.Error(), `mode: "calico"`) {
		t.Errorf("mode calico: %v", err)
	}
	_, err = Options{Dir: t.TempDir(), Mode: ModeBGP, Bird: "/nonexistent/bird", Birdc: "/nonexistent/birdc"}.withDefaults()
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/bird") {
		t.Errorf("mode bgp without BIRD: %v", err)
	}
}

func TestOptionsDefaults(t *testing.T) {
	bin := t.TempDir()
	for _, f := range []string{"kube-apiserver", "etcd", "loomd", "loomctl"} {
		if err := os.WriteFile(filepath.Join(bin, f), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	o, err := Options{
		Dir: t.TempDir(), BinDir: bin, CNIPluginsDir: bin,
		KubeAPIServer: filepath.Join(bin, "kube-apiserver"), Etcd: filepath.Join(bin, "etcd"),
	}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.Nodes != 3 || o.Mode != ModeVXLAN || o.Loomd[0] != filepath.Join(bin, "loomd") || o.SupervisorCommand[0] != filepath.Join(bin, "loomctl") ||
		o.RunDir != "/run/loom-sim" || o.GCInterval.Minutes() != 1 || o.Controller != "" {
		t.Errorf("defaults: %+v", o)
	}
	// loom-controller runs once make build puts it in BinDir.
	if err = os.WriteFile(filepath.Join(bin, "loom-controller"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	o, err = o.withDefaults()
	if err != nil || o.Controller != filepath.Join(bin, "loom-controller") {
		t.Errorf("controller %q, %v", o.Controller, err)
	}
}

func TestNodeNames(t *testing.T) {
	l, s := layout{"/srv/sim"}, slotDir{"/run/loom-sim", 12}
	n := newNode(l, s, ModeBridge, 3, 5)
	if n.Name != "node3" || n.NetNS != "loom12-node3" || n.UnderlayIP != netip.MustParseAddr("198.18.12.13") ||
		n.Subnet != netip.MustParsePrefix("198.18.12.0/24") || n.Gateway != netip.MustParseAddr("198.18.12.254") ||
		n.PodCIDR != netip.MustParsePrefix("10.244.3.0/24") {
		t.Errorf("node %+v", n)
	}
	if b := newNode(l, s, ModeVXLAN, 3, 4); b.UnderlayIP != netip.MustParseAddr("198.19.12.13") ||
		b.Subnet != netip.MustParsePrefix("198.19.12.0/24") || b.Gateway != netip.MustParseAddr("198.19.12.254") || b.PodCIDR.IsValid() {
		t.Errorf("node 3 of 4 in mode vxlan %+v", b)
	}
	for _, tc := range []struct{ nodes, onA int }{{1, 1}, {2, 1}, {3, 2}, {4, 2}, {5, 3}} {
		onA := 0
		for i := 1; i <= tc.nodes; i++ {
			if newNode(l, s, ModeVXLAN, i, tc.nodes).Subnet == s.subnets()[0].prefix {
				onA++
			}
		}
		if onA != tc.onA {
			t.Errorf("%d nodes: %d on subnet A, want %d", tc.nodes, onA, tc.onA)
		}
	}
	if s.hostLink() != "loom12-ul" || s.underlayNetNS() != "loom12-underlay" || s.apiServerIP().String() != "198.18.12.1" ||
		s.routerNetNS() != "loom12-router" || s.externalNetNS() != "loom12-ext" {
		t.Errorf("slot names %s %s %s %s %s", s.hostLink(), s.underlayNetNS(), s.apiServerIP(), s.routerNetNS(), s.externalNetNS())
	}
	if len(slotDir{"", maxSlot}.hostLink()) > 15 {
		t.Errorf("link name %q is longer than 15 characters", slotDir{"", maxSlot}.hostLink())
	}
	if got := n.HostPath("/var/lib/loom/ledger"); got != "/srv/sim/nodes/node3/root/var/lib/loom/ledger" {
		t.Errorf("HostPath = %s", got)
	}
	if got := n.HostPath("/usr/bin"); got != "" {
		t.Errorf("HostPath of a shared path = %q", got)
	}
}

func TestNodeConfigFiles(t *testing.T) {
	n := newNode(layout{"/srv/sim"}, slotDir{"/run/loom-sim", 1}, ModeBridge, 2, 3)
	conf, err := libcni.ConfListFromBytes(defaultNetworkConfig(n))
	if err != nil {
		t.Fatal(err)
	}
	if conf.Name != defaultNetwork || len(conf.Plugins) != 1 || conf.Plugins[0].Network.Type != "bridge" {
		t.Errorf("default network %s with %d plugins", conf.Name, len(conf.Plugins))
	}
	if !strings.Contains(string(conf.Bytes), `"subnet": "10.244.2.0/24"`) {
		t.Errorf("default network does not use the pod CIDR: %s", conf.Bytes)
	}
	// In Loom's own modes loomd starts from the deployment's ConfigMap content for the mode,
	// changed only where a simulated node must differ.
	extra := map[string]any{"namespaceIsolation": true, "logLevel": "debug"}
	for _, tc := range []struct {
		mode Mode
		node int
		want func(base map[string]any) map[string]any
	}{
		{ModeBridge, 2, func(map[string]any) map[string]any {
			return map[string]any{"defaultNetwork": "loom-default"}
		}},
		{ModeVXLAN, 2, nil},
		{ModeVXLANCrossSubnet, 3, nil},
		{ModeBGP, 3, func(base map[string]any) map[string]any {
			base["primaryNetwork"].(map[string]any)["bgp"].(map[string]any)["peers"] = []any{map[string]any{"address": "198.19.1.254", "asn": 64512.0}}
			return base
		}},
	} {
		n := newNode(layout{"/srv/sim"}, slotDir{"/run/loom-sim", 1}, tc.mode, tc.node, 3)
		b, err := loomdConfig(state{Options: Options{Mode: tc.mode, LoomdConfig: extra}}, layout{"/srv/sim"}, n)
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := yaml.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{}
		if tc.mode.loomNetwork() {
			raw, err := deployments.LoomdConfig(string(tc.mode))
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.Unmarshal(raw, &want); err != nil {
				t.Fatal(err)
			}
			want["sriov"] = map[string]any{"sysfsRoot": "/"}
		}
		if tc.want != nil {
			want = tc.want(want)
		}
		want["nodeName"], want["kubeconfig"] = n.Name, "/srv/sim/kubeconfig"
		maps.Copy(want, extra)
		if !reflect.DeepEqual(got, want) {
			gj, _ := json.Marshal(got)
			wj, _ := json.Marshal(want)
			t.Errorf("mode %s: loomd.yaml = %s, want %s", tc.mode, gj, wj)
		}
		if _, err := daemon.ParseConfig(b); err != nil {
			t.Errorf("mode %s: loomd does not accept its configuration: %v", tc.mode, err)
		}
	}
}

// TestBirdConfig checks that BIRD accepts the router's configuration.
func TestBirdConfig(t *testing.T) {
	bird := OptionsFromEnv(os.Getenv).Bird
	if bird == "" {
		t.Skip("no bird in $PATH, /usr/sbin or LOOM_BIRD: install bird2 (hack/tools.sh debs)")
	}
	conf := filepath.Join(t.TempDir(), "bird.conf")
	if err := os.WriteFile(conf, birdConfig(slotDir{"/run/loom-sim", 250}), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bird, "-p", "-c", conf).CombinedOutput(); err != nil {
		t.Errorf("bird -p: %v\n%s", err, out)
	}
}
