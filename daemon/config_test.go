package daemon

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/loom-cni/loom/cniserver"
)

func TestParseConfigDefaultsAndValidates(t *testing.T) {
	c, err := ParseConfig([]byte("nodeName: n1\ndefaultNetwork: loom-default\npodWait: 2s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Socket != "/run/loom/loom.sock" || c.LedgerDir != "/var/lib/loom/ledger" || c.PodWait.Duration != 2*time.Second {
		t.Fatalf("defaults not applied: %+v", c)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"no default network", "nodeName: n1\n", "defaultNetwork: required"},
		{"relative path", "nodeName: n1\ndefaultNetwork: d\nledgerDir: var/lib\n", "ledgerDir"},
		{"unknown field", "nodeName: n1\ndefaultNetwork: d\nsokcet: /x\n", "sokcet"},
		{"bad conf name", "nodeName: n1\ndefaultNetwork: d\ncniConfName: ../x.conflist\n", "cniConfName"},
		{"bad level", "nodeName: n1\ndefaultNetwork: d\nlogLevel: loud\n", "logLevel"},
		{"bad duration", "nodeName: n1\ndefaultNetwork: d\npodWait: soon\n", "invalid duration \"soon\""},
		{"bad primary network", "nodeName: n1\nprimaryNetwork: {mode: gre, clusterCIDR: 10.0.0.0/8}\n", "primaryNetwork: mode"},
		{"bad sriov pool", "nodeName: n1\ndefaultNetwork: d\nsriov: {pools: [{resourceName: loom.dev/a, selectors: {pfNames: ['ens1f0#7-2']}}]}\n", "sriov.pools"},
		{"bad pf config", "nodeName: n1\ndefaultNetwork: d\nsriov: {pfConfig: 'record:rel/file'}\n", "sriov.pfConfig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestSRIOVConfig(t *testing.T) {
	c, err := ParseConfig([]byte(`nodeName: n1
defaultNetwork: d
sriov:
  pfConfig: record:/var/lib/loom/vf-state.json
  pools:
  - resourceName: loom.dev/sriov_net_a
    selectors: {pfNames: ["ens1f0#0-3"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	pools, err := c.SRIOV.ParsedPools()
	if err != nil || len(pools) != 1 || pools[0].Name != "loom.dev/sriov_net_a" {
		t.Fatalf("pools = %+v, %v", pools, err)
	}
	if c.SRIOV.RecordFile() != "/var/lib/loom/vf-state.json" || c.SRIOV.SysfsRoot != "/" || c.SRIOV.RescanInterval.Duration != 200*time.Millisecond {
		t.Errorf("sriov settings: %+v", c.SRIOV)
	}
}

func TestPrimaryNetworkIsTheDefault(t *testing.T) {
	c, err := ParseConfig([]byte("nodeName: n1\nprimaryNetwork: {clusterCIDR: 10.244.0.0/16}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.DefaultNetwork != BuiltinNetwork {
		t.Errorf("defaultNetwork = %q, want the built-in %q when primaryNetwork is set", c.DefaultNetwork, BuiltinNetwork)
	}
	c, err = ParseConfig([]byte("nodeName: n1\ndefaultNetwork: flannel\nprimaryNetwork: {clusterCIDR: 10.244.0.0/16}\n"))
	if err != nil || c.DefaultNetwork != "flannel" {
		t.Errorf("an explicit defaultNetwork must win: %q, %v", c.DefaultNetwork, err)
	}
}

func TestCNIConfigCarriesWhatOfflineDelNeeds(t *testing.T) {
	c, err := ParseConfig([]byte("nodeName: n1\ndefaultNetwork: d\nsocket: /run/x.sock\nledgerDir: /l\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := cniConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		CNIVersion string            `json:"cniVersion"`
		Name       string            `json:"name"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err = json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	if list.CNIVersion != CNIConfigVersion || list.Name != "loom" || len(list.Plugins) != 1 {
		t.Fatalf("conflist = %s", b)
	}
	pc, err := cniserver.ParsePluginConf(list.Plugins[0])
	if err != nil {
		t.Fatal(err)
	}
	if pc.Type != "loom" || pc.Socket != "/run/x.sock" || pc.LedgerDir != "/l" || pc.CacheDir != c.CNICacheDir || !pc.Capabilities["portMappings"] {
		t.Fatalf("plugin conf = %+v", pc)
	}
}

// FuzzParseConfig: any file content either fails with an error or gives a configuration that
// passes Validate.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("nodeName: n1\ndefaultNetwork: loom-default\n"))
	f.Add([]byte("nodeName: n1\ndefaultNetwork: kube-system/d\nnamespaceIsolation: true\nglobalNamespaces: [default]\npodWait: 3s\n"))
	f.Add([]byte(`{"nodeName":"x","defaultNetwork":"d","socket":"relative"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err == nil {
			if verr := c.Validate(); verr != nil {
				t.Fatalf("ParseConfig accepted a configuration Validate rejects: %v", verr)
			}
		}
	})
}
