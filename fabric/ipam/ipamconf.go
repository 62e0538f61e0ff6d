package ipam

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"

	cnitypes "github.com/containernetworking/cni/pkg/types"
)

// IPAMType is the ipam "type" of Loom's IPAM plugin for secondary networks.
const IPAMType = "loom-ipam"

// IPAMConfig is the validated ipam section of a secondary network's CNI configuration:
//
//	"ipam": {
//	  "type": "loom-ipam",
//	  "range": "192.168.50.0/24",
//	  "blockSize": 28,
//	  "pool": "optional-name",
//	  "exclude": ["192.168.50.0/30"],
//	  "gateway": "192.168.50.1",
//	  "routes": [{"dst": "0.0.0.0/0", "gw": "192.168.50.1"}]
//	}
//
// Configurations of the same range share a pool, and so the range's addresses, across the
// cluster, whichever NetworkAttachmentDefinitions they come from. Those that share a pool
// should agree on its blockSize, exclude and gateway.
type IPAMConfig struct {
	// Network is the name of the network the configuration belongs to.
	Network string
	// Range is the range addresses are allocated from; results carry its prefix length.
	Range netip.Prefix
	// BlockSize is the prefix length of the blocks nodes claim of Range.
	BlockSize int
	// PoolName names the pool; it defaults to one derived from Range.
	PoolName string
	// Exclude lists ranges never allocated; a bare address in the configuration is a /32.
	Exclude []netip.Prefix
	// Gateway is the network's gateway, invalid when there is none. It is never allocated.
	Gateway netip.Addr
	// Routes are the routes results carry.
	Routes []Route
}

// Route is a route a result carries; GW is invalid for a route through the interface itself.
type Route struct {
	Dst netip.Prefix
	GW  netip.Addr
}

// ipamJSON is the ipam object as written.
type ipamJSON struct {
	Type      string   `json:"type"`
	Range     string   `json:"range"`
	BlockSize int      `json:"blockSize"`
	Pool      string   `json:"pool"`
	Exclude   []string `json:"exclude"`
	Gateway   string   `json:"gateway"`
	Routes    []struct {
		Dst string `json:"dst"`
		GW  string `json:"gw"`
	} `json:"routes"`
}

// ParseIPAMConfig parses the network configuration a CNI plugin reads on stdin and
// validates its ipam section. Its errors are *ConfigError naming the field at fault.
func ParseIPAMConfig(stdin []byte) (IPAMConfig, error) {
	var conf struct {
		Name string          `json:"name"`
		IPAM json.RawMessage `json:"ipam"`
	}
	if err := json.Unmarshal(stdin, &conf); err != nil {
		problem := "is not a JSON object"
		if syntaxErr := (*json.SyntaxError)(nil); errors.As(err, &syntaxErr) {
			problem = "is not valid JSON: " + syntaxErr.Error()
		}
		return IPAMConfig{}, &ConfigError{Field: "network configuration", Problem: problem,
			Fix: "pass the network's CNI configuration, a JSON object", Err: err}
	}
	if len(conf.IPAM) == 0 || string(conf.IPAM) == "null" {
		return IPAMConfig{}, &ConfigError{Field: "ipam", Problem: "is missing",
			Fix: `add "ipam": {"type": "` + IPAMType + `", "range": "<IPv4 CIDR>"}`}
	}
	var in ipamJSON
	dec := json.NewDecoder(bytes.NewReader(conf.IPAM))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return IPAMConfig{}, decodeError(err)
	}
	if in.Type != IPAMType {
		return IPAMConfig{}, &ConfigError{Field: "ipam.type", Problem: fmt.Sprintf("is %q, not %q", in.Type, IPAMType),
			Fix: fmt.Sprintf("set it to %q, or pass the configuration to the plugin it names", IPAMType)}
	}
	c := IPAMConfig{Network: conf.Name, BlockSize: in.BlockSize, PoolName: in.Pool}
	var err error
	if c.Range, err = parseRange(in.Range); err != nil {
		return IPAMConfig{}, err
	}
	if c.PoolName == "" {
		c.PoolName = rangePoolName(c.Range)
	}
	if c.Exclude, err = parseExclude(in.Exclude); err != nil {
		return IPAMConfig{}, err
	}
	if in.Gateway != "" {
		if c.Gateway, err = parseAddr("ipam.gateway", in.Gateway); err != nil {
			return IPAMConfig{}, err
		}
	}
	for i, r := range in.Routes {
		route, err := parseRoute(i, r.Dst, r.GW)
		if err != nil {
			return IPAMConfig{}, err
		}
		c.Routes = append(c.Routes, route)
	}
	if err := c.validate(); err != nil {
		return IPAMConfig{}, err
	}
	return c, nil
}

// validate checks what parsing each field alone cannot.
func (c IPAMConfig) validate() error {
	pool := Pool{Name: c.PoolName, CIDR: c.Range, BlockSize: c.BlockSize, Exclude: c.Exclude}.WithDefaults()
	err := pool.validate(fieldNames{
		name: "ipam.pool", cidr: "ipam.range", blockSize: "ipam.blockSize", tenant: "tenant", exclude: "ipam.exclude",
	})
	if err != nil {
		return err
	}
	// The gateway may lie in an excluded range, but not outside the range's host addresses.
	if c.Gateway.IsValid() && !(Pool{CIDR: c.Range}).Usable(c.Gateway) {
		return &ConfigError{Field: "ipam.gateway", Problem: fmt.Sprintf("%s is not a host address of %s", c.Gateway, c.Range),
			Fix: "use an address of the range other than its network and broadcast addresses"}
	}
	return nil
}

// Pool returns the pool the configuration allocates from, its gateway excluded.
func (c IPAMConfig) Pool() Pool {
	p := Pool{Name: c.PoolName, CIDR: c.Range, BlockSize: c.BlockSize}.WithDefaults()
	p.Exclude = append([]netip.Prefix(nil), c.Exclude...)
	if c.Gateway.IsValid() {
		p.Exclude = append(p.Exclude, netip.PrefixFrom(c.Gateway, 32))
	}
	return p
}

// Result returns the CNI result of allocating addr: addr with the range's prefix length,
// the gateway, and the routes.
func (c IPAMConfig) Result(addr netip.Addr) *current.Result {
	ip := &current.IPConfig{Address: net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(c.Range.Bits(), addr.BitLen())}}
	if c.Gateway.IsValid() {
		ip.Gateway = c.Gateway.AsSlice()
	}
	result := &current.Result{CNIVersion: current.ImplementedSpecVersion, IPs: []*current.IPConfig{ip}}
	for _, r := range c.Routes {
		route := &cnitypes.Route{Dst: net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), r.Dst.Addr().BitLen())}}
		if r.GW.IsValid() {
			route.GW = r.GW.AsSlice()
		}
		result.Routes = append(result.Routes, route)
	}
	return result
}

// rangePoolName derives a pool name from a range, so that configurations of one range share
// a pool: 192.168.50.0/24 is "range-192-168-50-0-24".
func rangePoolName(r netip.Prefix) string {
	return "range-" + strings.ReplaceAll(r.Addr().String(), ".", "-") + "-" + strconv.Itoa(r.Bits())
}

func parseRange(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, &ConfigError{Field: "ipam.range", Problem: "is missing",
			Fix: `set it to the IPv4 CIDR to allocate from, such as "192.168.50.0/24"`}
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, &ConfigError{Field: "ipam.range", Problem: fmt.Sprintf("%q is not a CIDR", s),
			Fix: `write it as address/length, such as "192.168.50.0/24"`, Err: err}
	}
	return p, nil
}

func parseExclude(in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range in {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil || a.Zone() != "" {
				return nil, &ConfigError{Field: "ipam.exclude[" + strconv.Itoa(i) + "]",
					Problem: fmt.Sprintf("%q is neither a CIDR nor an address", s),
					Fix:     `write a range as address/length, such as "192.168.50.0/30"`, Err: err}
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p)
	}
	return out, nil
}

func parseAddr(field, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, &ConfigError{Field: field, Problem: fmt.Sprintf("%q is not an IPv4 address", s),
			Fix: `write it as a dotted quad, such as "192.168.50.1"`, Err: err}
	}
	return a, nil
}

func parseRoute(i int, dst, gw string) (Route, error) {
	field := "ipam.routes[" + strconv.Itoa(i) + "]"
	p, err := netip.ParsePrefix(dst)
	switch {
	case err != nil || !p.Addr().Is4():
		return Route{}, &ConfigError{Field: field + ".dst", Problem: fmt.Sprintf("%q is not an IPv4 CIDR", dst),
			Fix: `write it as address/length, such as "0.0.0.0/0"`, Err: err}
	case p != p.Masked():
		return Route{}, &ConfigError{Field: field + ".dst", Problem: fmt.Sprintf("%s has host bits set", p),
			Fix: "use " + p.Masked().String()}
	}
	r := Route{Dst: p}
	if gw != "" {
		if r.GW, err = parseAddr(field+".gw", gw); err != nil {
			return Route{}, err
		}
	}
	return r, nil
}

// decodeError turns a failure to decode the ipam object into a *ConfigError.
func decodeError(err error) error {
	var typeErr *json.UnmarshalTypeError
	if !errors.As(err, &typeErr) {
		// An unknown field is most often a misspelt one; encoding/json has no type for it.
		return &ConfigError{Field: "ipam", Problem: strings.TrimPrefix(err.Error(), "json: "),
			Fix: "use only type, range, blockSize, pool, exclude, gateway and routes", Err: err}
	}
	if typeErr.Field == "" {
		return &ConfigError{Field: "ipam", Problem: "is a JSON " + typeErr.Value + ", not an object",
			Fix: `write it as {"type": "` + IPAMType + `", "range": "<IPv4 CIDR>"}`, Err: err}
	}
	want := "an object"
	switch typeErr.Type.Kind() {
	case reflect.Int:
		want = "a whole number"
	case reflect.String:
		want = "a string"
	case reflect.Slice:
		want = "a list"
	}
	return &ConfigError{Field: "ipam." + typeErr.Field, Problem: "is a JSON " + typeErr.Value,
		Fix: "write " + want, Err: err}
}
