package ipam

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
)

const fullConfig = `{
  "cniVersion": "1.0.0",
  "name": "data",
  "type": "macvlan",
  "master": "eth1",
  "ipam": {
    "type": "loom-ipam",
    "range": "192.168.50.0/24",
    "blockSize": 28,
    "pool": "data-net",
    "exclude": ["192.168.50.0/30", "192.168.50.200"],
    "gateway": "192.168.50.1",
    "routes": [{"dst": "0.0.0.0/0", "gw": "192.168.50.1"}, {"dst": "10.10.0.0/16"}]
  }
}`

func TestParseIPAMConfig(t *testing.T) {
	c, err := ParseIPAMConfig([]byte(fullConfig))
	if err != nil {
		t.Fatal(err)
	}
	want := IPAMConfig{
		Network:   "data",
		Range:     netip.MustParsePrefix("192.168.50.0/24"),
		BlockSize: 28,
		PoolName:  "data-net",
		Exclude:   []netip.Prefix{netip.MustParsePrefix("192.168.50.0/30"), netip.MustParsePrefix("192.168.50.200/32")},
		Gateway:   netip.MustParseAddr("192.168.50.1"),
		Routes: []Route{
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), GW: netip.MustParseAddr("192.168.50.1")},
			{Dst: netip.MustParsePrefix("10.10.0.0/16")},
		},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("ParseIPAMConfig() = %+v, want %+v", c, want)
	}

	pool := c.Pool()
	if err := pool.Validate(); err != nil {
		t.Fatalf("Pool().Validate() = %v", err)
	}
	if pool.Name != "data-net" || pool.BlockSize != 28 || pool.Usable(c.Gateway) || pool.Usable(netip.MustParseAddr("192.168.50.200")) {
		t.Errorf("Pool() = %+v, want pool data-net of /28 blocks without the gateway and the excluded address", pool)
	}
	if len(c.Exclude) != 2 {
		t.Errorf("Pool() changed the configuration's Exclude: %v", c.Exclude)
	}
}

func TestParseIPAMConfigDefaults(t *testing.T) {
	c, err := ParseIPAMConfig([]byte(`{"cniVersion":"0.4.0","name":"n","ipam":{"type":"loom-ipam","range":"192.168.50.0/24"}}`))
	if err != nil {
		t.Fatal(err)
	}
	pool := c.Pool()
	if pool.Name != "range-192-168-50-0-24" || pool.BlockSize != DefaultBlockSize || len(pool.Exclude) != 0 {
		t.Errorf("Pool() = %+v, want the pool named after the range, with default blocks and nothing excluded", pool)
	}
	small, err := ParseIPAMConfig([]byte(`{"ipam":{"type":"loom-ipam","range":"192.168.50.16/28"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if p := small.Pool(); p.BlockSize != 28 || p.BlockCount() != 1 {
		t.Errorf("Pool() of a /28 = %+v, want a single /28 block", p)
	}
}

func TestParseIPAMConfigErrors(t *testing.T) {
	tests := []struct {
		name  string
		ipam  string // the ipam object; the whole stdin when it starts with '!'
		field string
		is    error
	}{
		{"not JSON", "!{", "network configuration", nil},
		{"not an object", "![1]", "network configuration", nil},
		{"no ipam", `!{"name":"n"}`, "ipam", nil},
		{"ipam null", `!{"ipam":null}`, "ipam", nil},
		{"ipam a string", `"loom-ipam"`, "ipam", nil},
		{"wrong type", `{"type":"host-local","range":"10.0.0.0/24"}`, "ipam.type", nil},
		{"no type", `{"range":"10.0.0.0/24"}`, "ipam.type", nil},
		{"unknown field", `{"type":"loom-ipam","range":"10.0.0.0/24","subnet":"10.0.0.0/24"}`, "ipam", nil},
		{"no range", `{"type":"loom-ipam"}`, "ipam.range", nil},
		{"range not a CIDR", `{"type":"loom-ipam","range":"10.0.0.0"}`, "ipam.range", nil},
		{"range with host bits", `{"type":"loom-ipam","range":"10.0.0.1/24"}`, "ipam.range", nil},
		{"range IPv6", `{"type":"loom-ipam","range":"fd00::/64"}`, "ipam.range", ErrIPv6Unsupported},
		{"range too small", `{"type":"loom-ipam","range":"10.0.0.0/31"}`, "ipam.range", nil},
		{"range a number", `{"type":"loom-ipam","range":24}`, "ipam.range", nil},
		{"blockSize a string", `{"type":"loom-ipam","range":"10.0.0.0/24","blockSize":"28"}`, "ipam.blockSize", nil},
		{"blockSize too small", `{"type":"loom-ipam","range":"10.0.0.0/24","blockSize":16}`, "ipam.blockSize", nil},
		{"blockSize too large", `{"type":"loom-ipam","range":"10.0.0.0/24","blockSize":33}`, "ipam.blockSize", nil},
		{"pool not a label", `{"type":"loom-ipam","range":"10.0.0.0/24","pool":"Data_Net"}`, "ipam.pool", nil},
		{"exclude garbage", `{"type":"loom-ipam","range":"10.0.0.0/24","exclude":["10.0.0.0/24","x"]}`, "ipam.exclude[1]", nil},
		{"exclude outside", `{"type":"loom-ipam","range":"10.0.0.0/24","exclude":["10.1.0.0/24"]}`, "ipam.exclude[0]", nil},
		{"exclude host bits", `{"type":"loom-ipam","range":"10.0.0.0/24","exclude":["10.0.0.1/30"]}`, "ipam.exclude[0]", nil},
		{"exclude not a list", `{"type":"loom-ipam","range":"10.0.0.0/24","exclude":"10.0.0.0/30"}`, "ipam.exclude", nil},
		{"gateway garbage", `{"type":"loom-ipam","range":"10.0.0.0/24","gateway":"10.0.0"}`, "ipam.gateway", nil},
		{"gateway IPv6", `{"type":"loom-ipam","range":"10.0.0.0/24","gateway":"fd00::1"}`, "ipam.gateway", nil},
		{"gateway outside", `{"type":"loom-ipam","range":"10.0.0.0/24","gateway":"10.0.1.1"}`, "ipam.gateway", nil},
		{"gateway network address", `{"type":"loom-ipam","range":"10.0.0.0/24","gateway":"10.0.0.0"}`, "ipam.gateway", nil},
		{"route without dst", `{"type":"loom-ipam","range":"10.0.0.0/24","routes":[{"gw":"10.0.0.1"}]}`, "ipam.routes[0].dst", nil},
		{"route IPv6", `{"type":"loom-ipam","range":"10.0.0.0/24","routes":[{"dst":"::/0"}]}`, "ipam.routes[0].dst", nil},
		{"route host bits", `{"type":"loom-ipam","range":"10.0.0.0/24","routes":[{"dst":"0.0.0.0/0"},{"dst":"10.1.0.1/16"}]}`, "ipam.routes[1].dst", nil},
		{"route bad gw", `{"type":"loom-ipam","range":"10.0.0.0/24","routes":[{"dst":"0.0.0.0/0","gw":"gw"}]}`, "ipam.routes[0].gw", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdin := `{"cniVersion":"1.0.0","name":"n","type":"macvlan","ipam":` + tt.ipam + `}`
			if rest, ok := strings.CutPrefix(tt.ipam, "!"); ok {
				stdin = rest
			}
			_, err := ParseIPAMConfig([]byte(stdin))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("ParseIPAMConfig() = %v, want a *ConfigError", err)
			}
			if ce.Field != tt.field || ce.Problem == "" || ce.Fix == "" {
				t.Errorf("ParseIPAMConfig() = %#v, want field %q with problem and fix", ce, tt.field)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("ParseIPAMConfig() = %v, want errors.Is %v", err, tt.is)
			}
		})
	}
}

func TestIPAMConfigResult(t *testing.T) {
	c, err := ParseIPAMConfig([]byte(fullConfig))
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(c.Result(netip.MustParseAddr("192.168.50.17")))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"cniVersion":"` + current.ImplementedSpecVersion + `",` +
		`"ips":[{"address":"192.168.50.17/24","gateway":"192.168.50.1"}],` +
		`"routes":[{"dst":"0.0.0.0/0","gw":"192.168.50.1"},{"dst":"10.10.0.0/16"}]}`
	if string(got) != want {
		t.Errorf("Result() = %s\nwant        %s", got, want)
	}

	bare, err := ParseIPAMConfig([]byte(`{"ipam":{"type":"loom-ipam","range":"10.0.0.0/24"}}`))
	if err != nil {
		t.Fatal(err)
	}
	r := bare.Result(netip.MustParseAddr("10.0.0.9"))
	if len(r.IPs) != 1 || r.IPs[0].Gateway != nil || len(r.Routes) != 0 || r.IPs[0].Address.String() != "10.0.0.9/24" {
		t.Errorf("Result() without gateway and routes = %+v", r)
	}
}

// FuzzParseIPAMConfig feeds arbitrary network configurations to the parser. Whatever it
// refuses must be refused with a *ConfigError; whatever it accepts must make a valid pool,
// survive being written out and parsed again, and give results inside its range.
func FuzzParseIPAMConfig(f *testing.F) {
	for _, seed := range []string{
		fullConfig, "", "null", "{}", `{"ipam":{}}`, `{"ipam":[]}`,
		`{"ipam":{"type":"loom-ipam","range":"10.0.0.0/24"}}`,
		`{"ipam":{"type":"loom-ipam","range":"10.0.0.0/30","blockSize":32,"exclude":["10.0.0.1"]}}`,
		`{"ipam":{"type":"loom-ipam","range":"10.0.0.0/8","blockSize":22,"gateway":"10.255.255.254"}}`,
		`{"ipam":{"type":"loom-ipam","range":"fd00::/64"}}`,
		`{"ipam":{"type":"loom-ipam","range":"10.0.0.0/24","exclude":["::ffff:10.0.0.1"],"routes":[{"dst":"0.0.0.0/0","gw":"1.2.3.4"}]}}`,
		`{"ipam":{"type":"loom-ipam","range":"10.0.0.0/24","blockSize":-1e9,"pool":"a-b"}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, stdin []byte) {
		c, err := ParseIPAMConfig(stdin)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field == "" || ce.Problem == "" || ce.Fix == "" {
				t.Fatalf("ParseIPAMConfig(%q) = %v, want a *ConfigError with field, problem and fix", stdin, err)
			}
			return
		}
		pool := c.Pool()
		if poolErr := pool.Validate(); poolErr != nil {
			t.Fatalf("ParseIPAMConfig(%q) accepted a configuration whose pool is invalid: %v", stdin, poolErr)
		}
		again, err := ParseIPAMConfig(render(c))
		if err != nil {
			t.Fatalf("ParseIPAMConfig(%q) = %+v, which written out as %s does not parse: %v", stdin, c, render(c), err)
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("ParseIPAMConfig(%q) = %+v, but written out and parsed again %+v", stdin, c, again)
		}
		block, _ := pool.Block(0)
		for addr := range pool.Addrs(block) {
			r := c.Result(addr)
			if got, ok := netip.AddrFromSlice(r.IPs[0].Address.IP); !ok || got != addr || !c.Range.Contains(got) {
				t.Fatalf("Result(%s) = %+v", addr, r.IPs[0])
			}
			break
		}
	})
}

// render writes c out as a network configuration, in the form ParseIPAMConfig reads.
func render(c IPAMConfig) []byte {
	type route struct {
		Dst string `json:"dst"`
		GW  string `json:"gw,omitempty"`
	}
	in := map[string]any{"type": IPAMType, "range": c.Range.String(), "blockSize": c.BlockSize, "pool": c.PoolName}
	var exclude []string
	for _, e := range c.Exclude {
		exclude = append(exclude, e.String())
	}
	if exclude != nil {
		in["exclude"] = exclude
	}
	if c.Gateway.IsValid() {
		in["gateway"] = c.Gateway.String()
	}
	var routes []route
	for _, r := range c.Routes {
		rt := route{Dst: r.Dst.String()}
		if r.GW.IsValid() {
			rt.GW = r.GW.String()
		}
		routes = append(routes, rt)
	}
	if routes != nil {
		in["routes"] = routes
	}
	b, err := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": c.Network, "ipam": in})
	if err != nil {
		panic(err)
	}
	return b
}
