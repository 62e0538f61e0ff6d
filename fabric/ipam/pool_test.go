package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestPoolValidate(t *testing.T) {
	valid := Pool{Name: "default", CIDR: netip.MustParsePrefix("10.244.0.0/16"), BlockSize: 26}
	tests := []struct {
		name   string
		change func(*Pool)
		field  string // empty: valid
		is     error
	}{
		{"valid", func(*Pool) {}, "", nil},
		{"valid with tenant and exclude", func(p *Pool) {
			p.Tenant = "blue"
			p.Exclude = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/30"), netip.MustParsePrefix("10.0.0.0/8")}
		}, "", nil},
		{"block as large as the pool", func(p *Pool) { p.CIDR = netip.MustParsePrefix("192.168.0.0/24"); p.BlockSize = 24 }, "", nil},
		{"smallest pool", func(p *Pool) { p.CIDR = netip.MustParsePrefix("192.168.0.0/30"); p.BlockSize = 30 }, "", nil},
		{"single-address blocks", func(p *Pool) { p.CIDR = netip.MustParsePrefix("192.168.0.0/24"); p.BlockSize = 32 }, "", nil},
		{"empty name", func(p *Pool) { p.Name = "" }, "name", nil},
		{"name with upper case", func(p *Pool) { p.Name = "Default" }, "name", nil},
		{"name with a dot", func(p *Pool) { p.Name = "a.b" }, "name", nil},
		{"tenant not a label", func(p *Pool) { p.Tenant = "Blue_Team" }, "tenant", nil},
		{"no CIDR", func(p *Pool) { p.CIDR = netip.Prefix{} }, "cidr", nil},
		{"IPv6", func(p *Pool) { p.CIDR = netip.MustParsePrefix("fd00::/48") }, "cidr", ErrIPv6Unsupported},
		{"IPv4-mapped IPv6", func(p *Pool) { p.CIDR = netip.MustParsePrefix("::ffff:10.0.0.0/104") }, "cidr", ErrIPv6Unsupported},
		{"host bits", func(p *Pool) { p.CIDR = netip.MustParsePrefix("10.244.1.0/16") }, "cidr", nil},
		{"too small", func(p *Pool) { p.CIDR = netip.MustParsePrefix("10.244.0.0/31"); p.BlockSize = 31 }, "cidr", nil},
		{"block larger than the pool", func(p *Pool) { p.BlockSize = 15 }, "blockSize", nil},
		{"block beyond 32", func(p *Pool) { p.BlockSize = 33 }, "blockSize", nil},
		{"no block size", func(p *Pool) { p.BlockSize = 0 }, "blockSize", nil},
		{"block too large for one object", func(p *Pool) { p.BlockSize = 20 }, "blockSize", nil},
		{"too many blocks", func(p *Pool) { p.CIDR = netip.MustParsePrefix("10.0.0.0/8"); p.BlockSize = 30 }, "blockSize", nil},
		{"exclude IPv6", func(p *Pool) { p.Exclude = []netip.Prefix{netip.MustParsePrefix("fd00::/64")} }, "exclude[0]", nil},
		{"exclude host bits", func(p *Pool) {
			p.Exclude = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/30"), netip.MustParsePrefix("10.244.0.1/30")}
		}, "exclude[1]", nil},
		{"exclude outside", func(p *Pool) { p.Exclude = []netip.Prefix{netip.MustParsePrefix("10.245.0.0/24")} }, "exclude[0]", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := valid
			tt.change(&p)
			err := p.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Validate() = %v, want a *ConfigError", err)
			}
			if ce.Field != tt.field || ce.Problem == "" || ce.Fix == "" || ce.Pool != p.Name {
				t.Errorf("Validate() = %#v, want field %q with pool, problem and fix", ce, tt.field)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("Validate() = %v, want errors.Is %v", err, tt.is)
			}
		})
	}
}

func TestPoolWithDefaults(t *testing.T) {
	tests := []struct {
		cidr string
		in   int
		want int
	}{
		{"10.244.0.0/16", 0, DefaultBlockSize},
		{"192.168.50.0/28", 0, 28},
		{"192.168.50.0/24", 28, 28},
	}
	for _, tt := range tests {
		got := Pool{CIDR: netip.MustParsePrefix(tt.cidr), BlockSize: tt.in}.WithDefaults().BlockSize
		if got != tt.want {
			t.Errorf("WithDefaults() of %s with block size %d: %d, want %d", tt.cidr, tt.in, got, tt.want)
		}
	}
}

func TestPoolBlocks(t *testing.T) {
	tests := []struct {
		cidr      string
		blockSize int
		count     int
		index     int
		block     string
	}{
		{"10.244.0.0/16", 26, 1024, 0, "10.244.0.0/26"},
		{"10.244.0.0/16", 26, 1024, 1, "10.244.0.64/26"},
		{"10.244.0.0/16", 26, 1024, 5, "10.244.1.64/26"},
		{"10.244.0.0/16", 26, 1024, 1023, "10.244.255.192/26"},
		{"192.168.50.0/24", 28, 16, 15, "192.168.50.240/28"},
		{"192.168.50.0/24", 24, 1, 0, "192.168.50.0/24"},
		{"255.255.255.0/24", 32, 256, 255, "255.255.255.255/32"},
	}
	for _, tt := range tests {
		p := Pool{Name: "p", CIDR: netip.MustParsePrefix(tt.cidr), BlockSize: tt.blockSize}
		if got := p.BlockCount(); got != tt.count {
			t.Errorf("%s /%d: BlockCount() = %d, want %d", tt.cidr, tt.blockSize, got, tt.count)
		}
		block, ok := p.Block(tt.index)
		if !ok || block.String() != tt.block {
			t.Errorf("%s /%d: Block(%d) = %s, %v, want %s", tt.cidr, tt.blockSize, tt.index, block, ok, tt.block)
		}
		if idx, ok := p.blockIndex(block); !ok || idx != tt.index {
			t.Errorf("%s /%d: blockIndex(%s) = %d, %v, want %d", tt.cidr, tt.blockSize, block, idx, ok, tt.index)
		}
		last := netip.PrefixFrom(block.Addr(), 32)
		for a := block.Addr(); block.Contains(a); a = a.Next() {
			last = netip.PrefixFrom(a, 32)
		}
		if got, ok := p.BlockOf(last.Addr()); !ok || got != block {
			t.Errorf("%s /%d: BlockOf(%s) = %s, %v, want %s", tt.cidr, tt.blockSize, last.Addr(), got, ok, block)
		}
		if _, ok := p.Block(tt.count); ok {
			t.Errorf("%s /%d: Block(%d) exists", tt.cidr, tt.blockSize, tt.count)
		}
	}
	p := Pool{Name: "p", CIDR: netip.MustParsePrefix("10.244.0.0/16"), BlockSize: 26}
	for _, a := range []string{"10.245.0.1", "fd00::1", "::ffff:10.244.0.1"} {
		if b, ok := p.BlockOf(netip.MustParseAddr(a)); ok {
			t.Errorf("BlockOf(%s) = %s, want none", a, b)
		}
	}
	for _, b := range []string{"10.244.0.64/27", "10.244.0.65/26", "10.245.0.0/26", "10.244.0.0/25"} {
		if i, ok := p.blockIndex(netip.MustParsePrefix(b)); ok {
			t.Errorf("blockIndex(%s) = %d, want none", b, i)
		}
	}
	if _, ok := p.Block(-1); ok {
		t.Error("Block(-1) exists")
	}
	if n := (Pool{CIDR: netip.MustParsePrefix("10.0.0.0/16")}).BlockCount(); n != 0 {
		t.Errorf("BlockCount() of a pool without block size = %d, want 0", n)
	}
}

func TestPoolAddrs(t *testing.T) {
	pool := Pool{
		Name: "p", CIDR: netip.MustParsePrefix("192.168.50.0/24"), BlockSize: 28,
		Exclude: []netip.Prefix{netip.MustParsePrefix("192.168.50.0/30"), netip.MustParsePrefix("192.168.50.20/32")},
	}
	tests := []struct {
		block string
		first string
		last  string
		count int
	}{
		// The pool's network address and 192.168.50.1-3 are excluded.
		{"192.168.50.0/28", "192.168.50.4", "192.168.50.15", 12},
		{"192.168.50.16/28", "192.168.50.16", "192.168.50.31", 15},
		// The pool's broadcast address is never handed out.
		{"192.168.50.240/28", "192.168.50.240", "192.168.50.254", 15},
	}
	for _, tt := range tests {
		addrs := slices.Collect(pool.Addrs(netip.MustParsePrefix(tt.block)))
		if len(addrs) != tt.count || addrs[0].String() != tt.first || addrs[len(addrs)-1].String() != tt.last {
			t.Errorf("Addrs(%s) = %v, want %d from %s to %s", tt.block, addrs, tt.count, tt.first, tt.last)
		}
		if !slices.IsSortedFunc(addrs, netip.Addr.Compare) {
			t.Errorf("Addrs(%s) = %v, not ascending", tt.block, addrs)
		}
	}
	// A block's own network and broadcast addresses are usable: only the pool's are not.
	for a, want := range map[string]bool{
		"192.168.50.0": false, "192.168.50.2": false, "192.168.50.4": true, "192.168.50.16": true,
		"192.168.50.20": false, "192.168.50.31": true, "192.168.50.255": false, "192.168.51.1": false,
	} {
		if got := pool.Usable(netip.MustParseAddr(a)); got != want {
			t.Errorf("Usable(%s) = %v, want %v", a, got, want)
		}
	}
}

func TestBlockName(t *testing.T) {
	tests := []struct {
		pool  string
		block string
		want  string
	}{
		{"default", "10.244.0.64/26", "default.10-244-0-64-26"},
		{"range-192-168-50-0-24", "192.168.50.16/28", "range-192-168-50-0-24.192-168-50-16-28"},
		{"a", "255.255.255.255/32", "a.255-255-255-255-32"},
	}
	for _, tt := range tests {
		got := BlockName(tt.pool, netip.MustParsePrefix(tt.block))
		if got != tt.want {
			t.Errorf("BlockName(%q, %s) = %q, want %q", tt.pool, tt.block, got, tt.want)
		}
		if msgs := validation.IsDNS1123Subdomain(got); len(msgs) > 0 {
			t.Errorf("BlockName(%q, %s) = %q is not a DNS subdomain: %v", tt.pool, tt.block, got, msgs)
		}
	}
}
