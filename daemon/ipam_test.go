package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/loom-cni/loom/cniserver"
	"github.com/loom-cni/loom/fabric/ipam"
)

// fakeAllocator hands out addresses in order and records owners and releases.
type fakeAllocator struct {
	next     netip.Addr
	owners   map[string]ipam.Owner
	addrs    map[string]netip.Addr
	pools    []string
	failWith error
}

func newFakeAllocator() *fakeAllocator {
	return &fakeAllocator{next: netip.MustParseAddr("192.168.60.2"), owners: map[string]ipam.Owner{}, addrs: map[string]netip.Addr{}}
}

func (f *fakeAllocator) Allocate(_ context.Context, pool ipam.Pool, o ipam.Owner) (netip.Addr, netip.Prefix, error) {
	if f.failWith != nil {
		return netip.Addr{}, netip.Prefix{}, f.failWith
	}
	key := o.ContainerID + "/" + o.Ifname
	f.owners[key], f.addrs[key] = o, f.next
	f.pools = append(f.pools, pool.Name)
	a := f.next
	f.next = f.next.Next()
	return a, netip.PrefixFrom(a, 28).Masked(), nil
}

func (f *fakeAllocator) AllocateAddr(_ context.Context, pool ipam.Pool, o ipam.Owner, addr netip.Addr) (netip.Addr, netip.Prefix, error) {
	if f.failWith != nil {
		return netip.Addr{}, netip.Prefix{}, f.failWith
	}
	key := o.ContainerID + "/" + o.Ifname
	f.owners[key], f.addrs[key] = o, addr
	f.pools = append(f.pools, pool.Name)
	return addr, netip.PrefixFrom(addr, 28).Masked(), nil
}

func (f *fakeAllocator) Release(_ context.Context, containerID, ifname string) error {
	delete(f.addrs, containerID+"/"+ifname)
	return f.failWith
}

func (f *fakeAllocator) Lookup(containerID, ifname string) []netip.Addr {
	if a, ok := f.addrs[containerID+"/"+ifname]; ok {
		return []netip.Addr{a}
	}
	return nil
}

const poolNet = `{"cniVersion":"0.4.0","name":"pool-net","type":"macvlan",
  "ipam":{"type":"loom-ipam","range":"192.168.60.0/24","gateway":"192.168.60.1"}}`

func ipamCall(cmd, conf string) *cniserver.Request {
	return &cniserver.Request{Plugin: cniserver.PluginIPAM, Command: cmd, ContainerID: "c1", Ifname: "net1",
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=app;K8S_POD_UID=u1", Config: []byte(conf)}
}

func TestIPAMService(t *testing.T) {
	alloc := newFakeAllocator()
	svc := NewIPAMService(alloc, func() error { return nil }, slog.New(slog.DiscardHandler))
	ctx := context.Background()

	out, err := svc.ServeCNI(ctx, ipamCall("ADD", poolNet))
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		CNIVersion string `json:"cniVersion"`
		IPs        []struct {
			Address, Gateway string
		} `json:"ips"`
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		t.Fatal(jerr)
	}
	if res.CNIVersion != "0.4.0" || len(res.IPs) != 1 || res.IPs[0].Address != "192.168.60.2/24" || res.IPs[0].Gateway != "192.168.60.1" {
		t.Errorf("ADD result = %s, want 192.168.60.2/24 via 192.168.60.1 in CNI 0.4.0", out)
	}
	o := alloc.owners["c1/net1"]
	if o.Kind != ipam.OwnerPod || o.Namespace != "web" || o.Name != "app" || o.UID != "u1" {
		t.Errorf("owner = %+v, want the pod of CNI_ARGS", o)
	}
	if _, err = svc.ServeCNI(ctx, ipamCall("CHECK", poolNet)); err != nil {
		t.Errorf("CHECK of an allocated address: %v", err)
	}
	for range 2 {
		if _, err = svc.ServeCNI(ctx, ipamCall("DEL", poolNet)); err != nil {
			t.Errorf("DEL: %v", err)
		}
	}
	if _, err = svc.ServeCNI(ctx, ipamCall("CHECK", poolNet)); err == nil {
		t.Error("CHECK after DEL passed")
	}

	// DEL succeeds when the release cannot happen now: the node's reconciliation retries.
	alloc.failWith = errors.New("API server unreachable")
	if _, err = svc.ServeCNI(ctx, ipamCall("DEL", poolNet)); err != nil {
		t.Errorf("DEL with the API server down: %v", err)
	}
	_, err = svc.ServeCNI(ctx, ipamCall("ADD", poolNet))
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrTryAgainLater {
		t.Errorf("ADD with the API server down = %v, want CNI error %d (try again later)", err, types.ErrTryAgainLater)
	}
}

func TestIPAMServiceBadConfig(t *testing.T) {
	svc := NewIPAMService(newFakeAllocator(), func() error { return nil }, slog.New(slog.DiscardHandler))
	_, err := svc.ServeCNI(context.Background(), ipamCall("ADD", `{"cniVersion":"1.0.0","name":"x","type":"macvlan","ipam":{"type":"loom-ipam","range":"192.168.60.0/33"}}`))
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrInvalidNetworkConfig || !strings.Contains(cniErr.Details, "range") {
		t.Errorf("ADD with a bad range = %v, want an invalid-configuration error naming the range", err)
	}
}

func TestIPAMServiceNotReady(t *testing.T) {
	svc := NewIPAMService(newFakeAllocator(), func() error { return errors.New("loading blocks") }, slog.New(slog.DiscardHandler))
	_, err := svc.ServeCNI(context.Background(), ipamCall("ADD", poolNet))
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrTryAgainLater {
		t.Errorf("ADD before the blocks are loaded = %v, want try again later", err)
	}
	if _, err := svc.ServeCNI(context.Background(), ipamCall("DEL", poolNet)); err != nil {
		t.Errorf("DEL must work before the blocks are loaded: %v", err)
	}
}
