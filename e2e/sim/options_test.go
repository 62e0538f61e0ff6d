package sim

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"sigs.k8s.io/yaml"
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
	if o.Nodes != 2 || o.Loomd[0] != filepath.Join(bin, "loomd") || o.SupervisorCommand[0] != filepath.Join(bin, "loomctl") ||
		o.RunDir != "/run/loom-sim" || o.GCInterval.Minutes() != 1 {
		t.Errorf("defaults: %+v", o)
	}
}

func TestNodeNames(t *testing.T) {
	l, s := layout{"/srv/sim"}, slotDir{"/run/loom-sim", 12}
	n := newNode(l, s, 3)
	if n.Name != "node3" || n.NetNS != "loom12-node3" || n.UnderlayIP != netip.MustParseAddr("198.18.12.13") ||
		n.PodCIDR != netip.MustParsePrefix("10.244.3.0/24") {
		t.Errorf("node %+v", n)
	}
	if s.hostLink() != "loom12-ul" || s.underlayNetNS() != "loom12-underlay" || s.apiServerIP().String() != "198.18.12.1" {
		t.Errorf("slot names %s %s %s", s.hostLink(), s.underlayNetNS(), s.apiServerIP())
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
	n := newNode(layout{"/srv/sim"}, slotDir{"/run/loom-sim", 1}, 2)
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
	st := state{Options: Options{LoomdConfig: map[string]any{"namespaceIsolation": true, "logLevel": "debug"}}}
	b, err := loomdConfig(st, layout{"/srv/sim"}, n)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := `{"defaultNetwork":"loom-default","kubeconfig":"/srv/sim/kubeconfig","logLevel":"debug","namespaceIsolation":true,"nodeName":"node2"}`
	if j, _ := json.Marshal(got); string(j) != want {
		t.Errorf("loomd.yaml = %s, want %s", j, want)
	}
}
