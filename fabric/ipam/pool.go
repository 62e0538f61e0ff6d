package ipam

import (
	"encoding/binary"
	"fmt"
	"iter"
	"net/netip"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Limits on how a pool is carved into blocks.
const (
	// DefaultBlockSize is the prefix length of a pool's blocks when its definition leaves it
	// out: 64 addresses, enough for the pods of a typical node in one or two blocks.
	DefaultBlockSize = 26
	// LargestBlock is the shortest block prefix length allowed. A block's allocations live
	// in one object, which must stay far below etcd's request size limit: at a few hundred
	// bytes an allocation, 1024 of them are about 300 KiB.
	LargestBlock = 22
	// MaxBlocks is the most blocks a pool may be carved into. Every claim reads the blocks
	// that exist and looks for a free one among them.
	MaxBlocks = 1 << 20
)

// Pool is a range of addresses that nodes claim blocks of. A pool is a value: the wiring
// builds it from configuration (the cluster CIDR, a tenant's CIDR, a secondary network's IPAM
// range) and passes it to every Allocate.
//
// Every configuration of one pool, on every node, must agree on CIDR and BlockSize; claims
// never create a block that overlaps an existing one, of this pool or any other, so a
// disagreement costs addresses, never duplicates them.
type Pool struct {
	// Name identifies the pool; it is a DNS label and prefixes the names of its blocks.
	Name string
	// CIDR is the IPv4 range the pool hands out, its host bits zero.
	CIDR netip.Prefix
	// BlockSize is the prefix length of the pool's blocks.
	BlockSize int
	// Tenant is the tenant whose pods use the pool; its blocks carry it as a label.
	Tenant string
	// Exclude lists ranges of CIDR that are never allocated, such as a gateway's address.
	Exclude []netip.Prefix
}

// WithDefaults returns p with a zero BlockSize replaced by DefaultBlockSize, or by the
// CIDR's own prefix length when the CIDR is smaller than a default block.
func (p Pool) WithDefaults() Pool {
	if p.BlockSize == 0 {
		p.BlockSize = max(DefaultBlockSize, p.CIDR.Bits())
	}
	return p
}

// Validate reports the first problem of p's definition as a *ConfigError.
func (p Pool) Validate() error {
	return p.validate(fieldNames{
		pool: p.Name, name: "name", cidr: "cidr", blockSize: "blockSize", tenant: "tenant", exclude: "exclude",
	})
}

// fieldNames are the names under which a pool's settings appear in its source, so that an
// IPAM configuration's errors say "ipam.range" where a pool's say "cidr".
type fieldNames struct {
	pool                                   string
	name, cidr, blockSize, tenant, exclude string
}

func (f fieldNames) fail(field string, cause error, fix, format string, args ...any) error {
	return &ConfigError{Pool: f.pool, Field: field, Problem: fmt.Sprintf(format, args...), Fix: fix, Err: cause}
}

func (p Pool) validate(f fieldNames) error {
	// The CIDR first: an IPAM configuration derives the pool's name from it.
	if err := validateCIDR(p.CIDR, f); err != nil {
		return err
	}
	const labelFix = "use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
	if len(validation.IsDNS1123Label(p.Name)) > 0 {
		return f.fail(f.name, nil, labelFix, "%q is not a DNS label", p.Name)
	}
	if p.Tenant != "" && len(validation.IsDNS1123Label(p.Tenant)) > 0 {
		return f.fail(f.tenant, nil, labelFix, "%q is not a DNS label", p.Tenant)
	}
	if err := p.validateBlockSize(f); err != nil {
		return err
	}
	for i, e := range p.Exclude {
		field := f.exclude + "[" + strconv.Itoa(i) + "]"
		switch {
		case !e.IsValid() || !e.Addr().Is4():
			return f.fail(field, nil, "use an IPv4 prefix such as 10.0.0.0/30, or remove it", "%s is not an IPv4 prefix", e)
		case e != e.Masked():
			return f.fail(field, nil, "use "+e.Masked().String(), "%s has host bits set", e)
		case !e.Overlaps(p.CIDR):
			return f.fail(field, nil, "remove it, or correct it to a range inside "+p.CIDR.String(), "%s is outside %s", e, p.CIDR)
		}
	}
	return nil
}

func validateCIDR(cidr netip.Prefix, f fieldNames) error {
	switch {
	case !cidr.IsValid():
		return f.fail(f.cidr, nil, "set it to an IPv4 CIDR such as 10.244.0.0/16", "is not set")
	case !cidr.Addr().Is4():
		return f.fail(f.cidr, ErrIPv6Unsupported, "use an IPv4 CIDR", "%s: %v", cidr, ErrIPv6Unsupported)
	case cidr != cidr.Masked():
		return f.fail(f.cidr, nil, "use "+cidr.Masked().String(), "%s has host bits set", cidr)
	case cidr.Bits() > 30:
		return f.fail(f.cidr, nil, "use a /30 or larger CIDR: a pool needs addresses besides its network and broadcast addresses",
			"%s is too small", cidr)
	}
	return nil
}

func (p Pool) validateBlockSize(f fieldNames) error {
	bits := p.CIDR.Bits()
	switch {
	case p.BlockSize < bits || p.BlockSize > 32:
		return f.fail(f.blockSize, nil, fmt.Sprintf("use a prefix length between %d and 32", max(bits, LargestBlock)),
			"/%d blocks do not fit %s", p.BlockSize, p.CIDR)
	case p.BlockSize < LargestBlock:
		return f.fail(f.blockSize, nil, fmt.Sprintf("use %d or more: one block's allocations must fit in one object", LargestBlock),
			"/%d blocks hold %d addresses each", p.BlockSize, 1<<(32-p.BlockSize))
	case p.BlockSize-bits > 20:
		return f.fail(f.blockSize, nil, fmt.Sprintf("use %d or less", bits+20),
			"/%d blocks would carve %s into more than %d blocks", p.BlockSize, p.CIDR, MaxBlocks)
	}
	return nil
}

// BlockCount returns how many blocks p's CIDR is carved into, zero for an invalid pool.
func (p Pool) BlockCount() int {
	n := p.BlockSize - p.CIDR.Bits()
	if !p.CIDR.Addr().Is4() || n < 0 || n > 32 || p.BlockSize > 32 {
		return 0
	}
	return 1 << n
}

// Block returns p's ith block, counting from the start of its CIDR, and false when i is out
// of range.
func (p Pool) Block(i int) (netip.Prefix, bool) {
	if i < 0 || i >= p.BlockCount() {
		return netip.Prefix{}, false
	}
	base := uint64(v4(p.CIDR.Addr())) + uint64(i)<<(32-p.BlockSize)
	return netip.PrefixFrom(addrV4(uint32(base)), p.BlockSize), true
}

// BlockOf returns the block of p that holds a, and false when a is not in p's CIDR.
func (p Pool) BlockOf(a netip.Addr) (netip.Prefix, bool) {
	if p.BlockCount() == 0 || !a.Is4() || !p.CIDR.Contains(a) {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, p.BlockSize).Masked(), true
}

// blockIndex returns the index of block among p's blocks, and false when block is not
// exactly one of them.
func (p Pool) blockIndex(block netip.Prefix) (int, bool) {
	if p.BlockCount() == 0 || block.Bits() != p.BlockSize || block != block.Masked() || !p.CIDR.Contains(block.Addr()) {
		return 0, false
	}
	return int((v4(block.Addr()) - v4(p.CIDR.Addr())) >> (32 - p.BlockSize)), true
}

// Usable reports whether a may be allocated: it lies in p's CIDR, is neither the CIDR's
// network nor its broadcast address, and is in no Exclude range.
func (p Pool) Usable(a netip.Addr) bool {
	if !a.Is4() || !p.CIDR.IsValid() || !p.CIDR.Addr().Is4() || !p.CIDR.Contains(a) {
		return false
	}
	network := p.CIDR.Masked().Addr()
	broadcast := addrV4(v4(network) | uint32(uint64(1)<<(32-p.CIDR.Bits())-1))
	if a == network || a == broadcast {
		return false
	}
	for _, e := range p.Exclude {
		if e.Contains(a) {
			return false
		}
	}
	return true
}

// Addrs yields the usable addresses of block in ascending order.
func (p Pool) Addrs(block netip.Prefix) iter.Seq[netip.Addr] {
	return func(yield func(netip.Addr) bool) {
		block = block.Masked()
		for a := block.Addr(); block.Contains(a); a = a.Next() {
			if p.Usable(a) && !yield(a) {
				return
			}
		}
	}
}

// BlockName returns the name of the IPBlock that records block of pool: the pool's name, a
// dot, and the block with dashes for dots and slash, such as "default.10-244-0-64-26". It is
// a DNS subdomain, as object names must be, whenever pool is a DNS label.
func BlockName(pool string, block netip.Prefix) string {
	return pool + "." + strings.ReplaceAll(block.Addr().String(), ".", "-") + "-" + strconv.Itoa(block.Bits())
}

func v4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addrV4(u uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], u)
	return netip.AddrFrom4(b)
}
