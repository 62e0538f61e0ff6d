package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/loom-cni/loom/cniserver"
	"github.com/loom-cni/loom/fabric/ipam"
	"github.com/loom-cni/loom/fabric/ipam/ipamtest"
)

// askedNet is a loom-ipam network whose pods may ask for their address ("ips").
const askedNet = `{"cniVersion":"1.0.0","name":"lan","type":"macvlan","master":"eth0",
  "ipam":{"type":"loom-ipam","range":"192.168.61.0/24","blockSize":26,"gateway":"192.168.61.1","exclude":["192.168.61.250/31"]}%s}`

// askedCall is loom-ipam's ADD for pod web/<pod> (container c-<pod>, interface net1) whose
// configuration carries extra (a runtimeConfig or args member, or nothing).
func askedCall(pod, extra string) *cniserver.Request {
	return &cniserver.Request{Plugin: cniserver.PluginIPAM, Command: "ADD", ContainerID: "c-" + pod, Ifname: "net1",
		Args:   fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=%s;K8S_POD_UID=uid-%s", pod, pod),
		Config: fmt.Appendf(nil, askedNet, extra)}
}

func ips(addrs ...string) string {
	out := `,"runtimeConfig":{"ips":[`
	for i, a := range addrs {
		if i > 0 {
			out += ","
		}
		out += `"` + a + `"`
	}
	return out + "]}"
}

// realAllocator is a node's allocator over store, its blocks loaded.
func realAllocator(t *testing.T, store ipam.Store, node string) *ipam.Allocator {
	t.Helper()
	a := ipam.NewAllocator(store, node, slog.New(slog.DiscardHandler), nil)
	if err := a.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestIPAMServiceAskedFor checks that loom-ipam gives a pod the address its "ips" asks for
// (in runtimeConfig, or in args.cni from the annotation's cni-args), and refuses for good
// (CNI code 7, never "try again later") an address another pod holds, on this node or
// another, one of another node's block, one the pool never hands out, an IPv6 address of
// this IPv4-only pool, several addresses and unreadable ones; each refusal names the pod and
// the network, and leaves the refused pod holding nothing.
func TestIPAMServiceAskedFor(t *testing.T) {
	ctx := context.Background()
	store := ipamtest.NewStore()
	node := realAllocator(t, store, "node-a")
	svc := NewIPAMService(node, func() error { return nil }, slog.New(slog.DiscardHandler))

	// A pod on another node holds an address of that node's block.
	other := realAllocator(t, store, "node-b")
	pool := ipam.Pool{Name: "range-192-168-61-0-24", CIDR: netip.MustParsePrefix("192.168.61.0/24"), BlockSize: 26,
		Exclude: []netip.Prefix{netip.MustParsePrefix("192.168.61.250/31"), netip.MustParsePrefix("192.168.61.1/32")}}
	remote, _, err := other.AllocateAddr(ctx, pool, ipam.Owner{Kind: ipam.OwnerPod, Namespace: "globex", Name: "db", UID: "uid-db",
		ContainerID: "c-db", Ifname: "net1"}, netip.MustParseAddr("192.168.61.200"))
	if err != nil {
		t.Fatal(err)
	}

	out, err := svc.ServeCNI(ctx, askedCall("holder", ips("192.168.61.7/24")))
	if err != nil {
		t.Fatalf("asking for a free address: %v", err)
	}
	if got := node.Lookup("c-holder", "net1"); len(got) != 1 || got[0] != netip.MustParseAddr("192.168.61.7") {
		t.Fatalf("holder was given %v (result %s), want 192.168.61.7", got, out)
	}
	if _, err = svc.ServeCNI(ctx, askedCall("cniargs", `,"args":{"cni":{"ips":["192.168.61.9"]}}`)); err != nil {
		t.Fatalf("asking through args.cni.ips: %v", err)
	}
	if got := node.Lookup("c-cniargs", "net1"); len(got) != 1 || got[0] != netip.MustParseAddr("192.168.61.9") {
		t.Fatalf("args.cni.ips: given %v, want 192.168.61.9", got)
	}

	var taken *ipam.AddressTakenError
	for _, c := range []struct {
		name, extra string
		is          error
		check       func(error) bool
	}{
		{"held on this node", ips("192.168.61.7/24"), ipam.ErrAddressTaken,
			func(err error) bool {
				return errors.As(err, &taken) && taken.Holder.Name == "holder" && taken.Node == ""
			}},
		{"held on this node, asked through args.cni", `,"args":{"cni":{"ips":["192.168.61.7"]}}`, ipam.ErrAddressTaken, nil},
		{"held on another node", ips(remote.String()), ipam.ErrAddressTaken,
			func(err error) bool {
				return errors.As(err, &taken) && taken.Holder.Name == "db" && taken.Node == "node-b"
			}},
		{"free in another node's block", ips(remote.Next().String()), ipam.ErrOtherNodesBlock, nil},
		{"the gateway", ips("192.168.61.1/24"), ipam.ErrNotInPool, nil},
		{"excluded", ips("192.168.61.251"), ipam.ErrNotInPool, nil},
		{"outside the range", ips("192.168.62.7/24"), ipam.ErrNotInPool, nil},
		{"the broadcast address", ips("192.168.61.255/24"), ipam.ErrNotInPool, nil},
		{"IPv6", ips("2001:db8:61::7/64"), ipam.ErrIPv6Unsupported, nil},
		{"IPv4 and IPv6", ips("192.168.61.30/24", "2001:db8:61::7/64"), errAskedAddresses, nil},
		{"two addresses", ips("192.168.61.30/24", "192.168.61.31/24"), errAskedAddresses, nil},
		{"not an address", ips("192.168.61.300"), errAskedAddresses, nil},
		{"not a list", `,"runtimeConfig":{"ips":"192.168.61.30"}`, errAskedAddresses, nil},
	} {
		_, askErr := svc.ServeCNI(ctx, askedCall("asker", c.extra))
		var ae *AllocError
		var cniErr *types.Error
		switch {
		case !errors.Is(askErr, c.is):
			t.Errorf("%s: got %v, want an error wrapping %v", c.name, askErr, c.is)
		case !errors.As(askErr, &ae) || ae.Pod != "web/asker" || ae.Network != "lan":
			t.Errorf("%s: got %v, want an *AllocError naming pod web/asker and network lan", c.name, askErr)
		case !errors.As(askErr, &cniErr) || cniErr.Code != types.ErrInvalidNetworkConfig:
			t.Errorf("%s: got CNI error %+v, want code %d: trying again cannot help", c.name, cniErr, types.ErrInvalidNetworkConfig)
		case c.check != nil && !c.check(askErr):
			t.Errorf("%s: %v does not name the holder", c.name, askErr)
		default:
			t.Logf("%s: %v", c.name, askErr)
		}
		if held := node.Lookup("c-asker", "net1"); len(held) != 0 {
			t.Errorf("%s: the refused pod holds %v, want nothing", c.name, held)
		}
	}
	// The holder asking again (a runtime retrying its ADD) keeps its address.
	if _, err = svc.ServeCNI(ctx, askedCall("holder", ips("192.168.61.7/24"))); err != nil {
		t.Errorf("the holder asking again: %v", err)
	}
}

// TestIPAMServiceAskedForUnreachable checks that an asked-for address that cannot be allocated
// because the API server does not answer may be tried again: it is not the pod's mistake.
func TestIPAMServiceAskedForUnreachable(t *testing.T) {
	alloc := newFakeAllocator()
	alloc.failWith = errors.New("API server unreachable")
	svc := NewIPAMService(alloc, func() error { return nil }, slog.New(slog.DiscardHandler))
	_, err := svc.ServeCNI(context.Background(), askedCall("app", ips("192.168.61.7/24")))
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrTryAgainLater {
		t.Errorf("got %v, want CNI error %d (try again later)", err, types.ErrTryAgainLater)
	}
}
