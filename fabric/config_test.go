package fabric

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

func TestConfigDefaults(t *testing.T) {
	s, err := Config{ClusterCIDR: "10.244.0.0/16"}.Validate()
	if err != nil {
		t.Fatal(err)
	}
	if s.Mode != ModeVXLAN || s.BlockSize != 26 || s.VNI != 1 || s.Port != 4789 || s.ASN != 64512 || !s.Mesh || s.ListenPort != 179 {
		t.Errorf("defaults = %+v", s)
	}
	if s.ClusterCIDR != netip.MustParsePrefix("10.244.0.0/16") {
		t.Errorf("cluster CIDR = %s", s.ClusterCIDR)
	}
}

func TestConfigErrors(t *testing.T) {
	off := false
	for _, tc := range []struct {
		name string
		c    Config
		want []string
	}{
		{"no CIDR", Config{}, []string{"clusterCIDR: required"}},
		{"bad mode", Config{Mode: "ipip", ClusterCIDR: "10.0.0.0/8"}, []string{`mode: "ipip"`}},
		{"host bits", Config{ClusterCIDR: "10.244.1.0/16"}, []string{"did you mean 10.244.0.0/16"}},
		{"IPv6", Config{ClusterCIDR: "fd00::/48"}, []string{"IPv6 pools are not supported yet"}},
		{"block larger than the pool", Config{ClusterCIDR: "10.244.0.0/24", BlockSize: 20}, []string{"blockSize: /20"}},
		{"bad MTU and VNI", Config{ClusterCIDR: "10.0.0.0/8", MTU: 100, VXLAN: VXLANConfig{VNI: 1 << 24}}, []string{"mtu: 100", "vxlan.vni"}},
		{"bad node IP", Config{ClusterCIDR: "10.0.0.0/8", NodeIP: "fe80::1"}, []string{"nodeIP"}},
		{"peers", Config{ClusterCIDR: "10.0.0.0/8", BGP: BGPConfig{Peers: []BGPPeer{
			{Address: "198.18.0.1", ASN: 65000}, {Address: "198.18.0.1", ASN: 65000}, {Address: "x", ASN: 1}, {Address: "198.18.0.2"}}}},
			[]string{"listed twice", `"x" is not an IP address`, "peers[3].asn: required"}},
		{"no mesh, no peers", Config{Mode: ModeBGP, ClusterCIDR: "10.0.0.0/8", BGP: BGPConfig{NodeToNodeMesh: &off}}, []string{"no node would learn any route"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.c.Validate()
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestOverhead(t *testing.T) {
	if Overhead(ModeBGP) != 0 || Overhead(ModeVXLAN) != 50 || Overhead(ModeVXLANCrossSubnet) != 50 {
		t.Error("overheads: bgp encapsulates nothing, both vxlan modes 50 bytes")
	}
}

// FuzzConfig feeds arbitrary primaryNetwork sections to the parser: it never panics, and a
// configuration it accepts has a usable pool.
func FuzzConfig(f *testing.F) {
	for _, seed := range []string{
		`{"clusterCIDR":"10.244.0.0/16"}`,
		`{"mode":"bgp","clusterCIDR":"10.0.0.0/8","blockSize":24,"bgp":{"asn":65001,"peers":[{"address":"198.18.0.254","asn":65000,"password":"x"}]}}`,
		`{"mode":"vxlan-crosssubnet","clusterCIDR":"172.16.0.0/12","mtu":9000,"vxlan":{"vni":42,"port":8472}}`,
		`{"clusterCIDR":"10.244.0.0/33"}`, `{"mode":1}`, `[]`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var c Config
		if json.Unmarshal([]byte(raw), &c) != nil {
			return
		}
		s, err := c.Validate()
		if err != nil {
			return
		}
		if !s.ClusterCIDR.IsValid() || s.BlockSize < s.ClusterCIDR.Bits() || s.BlockSize > 32 {
			t.Fatalf("accepted %s with pool %s and block size %d", raw, s.ClusterCIDR, s.BlockSize)
		}
	})
}
