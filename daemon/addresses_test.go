package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ktypes "k8s.io/apimachinery/pkg/types"

	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/delegate/npwg"
	"github.com/loom-cni/loom/policy"
)

// nadList is a fixed set of NetworkAttachmentDefinitions.
type nadList []*nadv1.NetworkAttachmentDefinition

func (l nadList) NADs() ([]*nadv1.NetworkAttachmentDefinition, error) { return l, nil }

func (l nadList) NAD(namespace, name string) (*nadv1.NetworkAttachmentDefinition, error) {
	for _, n := range l {
		if n.Namespace == namespace && n.Name == name {
			return n, nil
		}
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Group: "k8s.cni.cncf.io", Resource: "network-attachment-definitions"}, name)
}

func nadOf(ns, name, master string) *nadv1.NetworkAttachmentDefinition {
	return &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: ktypes.UID("uid-" + ns + "-" + name)},
		Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: fmt.Sprintf(
			`{"cniVersion":"1.0.0","type":"macvlan","master":%q,"mode":"bridge","capabilities":{"ips":true,"mac":true},"ipam":{"type":"static"}}`, master)},
	}
}

// snapshot is a fixed cluster of pods.
type snapshot []policy.Pod

func (s snapshot) Snapshot() policy.Snapshot { return policy.Snapshot{Pods: s} }

// answering is an Attachment that gives each interface the addresses it asked for, and
// counts its ADDs.
type answering struct{ adds atomic.Int32 }

func (a *answering) Add(_ context.Context, c delegate.Call) (types.Result, error) {
	a.adds.Add(1)
	res := &current.Result{CNIVersion: "1.1.0", Interfaces: []*current.Interface{{Name: c.Ifname, Sandbox: c.Netns}}}
	ips, _ := c.CapabilityArgs["ips"].([]string)
	for _, ip := range ips {
		p := netip.MustParsePrefix(ip)
		res.IPs = append(res.IPs, &current.IPConfig{Interface: current.Int(0),
			Address: net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}})
	}
	return res, nil
}

func (a *answering) Check(context.Context, delegate.Call, types.Result) error { return nil }
func (a *answering) Del(context.Context, delegate.Call, types.Result) error   { return nil }

// TestAddressGate checks, through the orchestrator and a real ledger, that a pod asking on
// acme/lan for an address (IPv4 or IPv6) that a pod of another tenant has on globex/lan — a
// different NAD on the same macvlan master — is refused before anything is attached or
// recorded, whether the holder is this node's (from the ledger) or another node's (from its
// network-status); that an address on another master passes; and that the runtime gets a
// CNI error saying the configuration is at fault, not that it should try again.
func TestAddressGate(t *testing.T) {
	nads := nadList{nadOf("acme", "lan", "eth0"), nadOf("globex", "lan", "eth0"), nadOf("acme", "other", "eth1")}
	resolver, err := npwg.NewResolver(npwg.Config{NADs: nads, DefaultNetwork: "kube-system/none"})
	if err != nil {
		t.Fatal(err)
	}
	ledger, err := delegate.OpenLedger(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	att := &answering{}
	orch := delegate.NewOrchestrator(ledger, map[string]delegate.Attachment{delegate.KindCNI: att}, slog.New(slog.DiscardHandler))
	gate := NewAddressGate(nads, resolver, func() string { return "eth0" })
	orch.SetGate(gate)
	gate.SetClusterPods(snapshot{{PodKey: policy.PodKey{Namespace: "globex", Name: "g2"}, Node: "node2",
		Endpoints: []policy.Endpoint{{Network: "globex/lan", Interface: "net1",
			IPs: []netip.Addr{netip.MustParseAddr("10.9.0.10"), netip.MustParseAddr("2001:db8:9::10")}}}}})

	ctx := context.Background()
	add := func(ns, name, network string, ips ...string) error {
		nad, nerr := nads.NAD(ns, network)
		if nerr != nil {
			t.Fatal(nerr)
		}
		s, serr := resolver.NetworkSpec(nad)
		if serr != nil {
			t.Fatal(serr)
		}
		s.Ifname, s.CapabilityArgs = "net1", map[string]any{"ips": ips}
		pod := delegate.PodRef{Namespace: ns, Name: name, UID: delegate.PodUID("uid-" + name)}
		_, aerr := orch.Add(ctx, pod, delegate.ContainerID("c-"+name), "/var/run/netns/"+name, []delegate.Spec{s})
		return aerr
	}
	if err = add("globex", "g1", "lan", "10.9.0.7/24", "2001:db8:9::7/64"); err != nil {
		t.Fatalf("first pod: %v", err)
	}
	for _, c := range []struct {
		addr, holder, node string
	}{
		{"10.9.0.7/24", "globex/g1", ""},
		{"2001:db8:9::7/64", "globex/g1", ""},
		{"10.9.0.10/24", "globex/g2", "node2"},
		{"2001:db8:9::10/64", "globex/g2", "node2"},
	} {
		before := att.adds.Load()
		aerr := add("acme", "a1", "lan", c.addr)
		var taken *npwg.TakenError
		var e *npwg.Error
		switch {
		case !errors.As(aerr, &taken) || !errors.As(aerr, &e):
			t.Errorf("asking for %s: got %v, want an *npwg.Error wrapping an *npwg.TakenError", c.addr, aerr)
		case e.Pod != "acme/a1" || e.Network != "acme/lan" || taken.Holder.Pod != c.holder || taken.Holder.Node != c.node ||
			taken.Addr != netip.MustParsePrefix(c.addr).Addr():
			t.Errorf("asking for %s: got %v, want acme/a1 on acme/lan refused for %s on node %q", c.addr, aerr, c.holder, c.node)
		default:
			t.Logf("%s: %v", c.addr, aerr)
		}
		if att.adds.Load() != before {
			t.Errorf("asking for %s: the refused pod's attachment was attempted", c.addr)
		}
		if _, ok, lerr := ledger.Load("c-a1"); ok || lerr != nil {
			t.Errorf("asking for %s: the refused pod has a ledger record (%v)", c.addr, lerr)
		}
		var cniErr *types.Error
		if !errors.As(addError(delegate.PodRef{Namespace: "acme", Name: "a1"}, aerr), &cniErr) || cniErr.Code != types.ErrInvalidNetworkConfig {
			t.Errorf("asking for %s: CNI error %+v, want code %d", c.addr, cniErr, types.ErrInvalidNetworkConfig)
		}
	}
	if err = add("acme", "a1", "other", "10.9.0.7/24", "2001:db8:9::7/64"); err != nil {
		t.Errorf("the same addresses on another master: %v", err)
	}
}

// TestAddErrorCodes checks the CNI codes a failed ADD reaches the runtime with: a taken
// address is the configuration's fault, a delegate's own code passes through, anything else
// is internal; and the pod is named once.
func TestAddErrorCodes(t *testing.T) {
	pod := delegate.PodRef{Namespace: "acme", Name: "a1"}
	taken := &npwg.Error{Pod: "acme/a1", Network: "acme/lan", Problem: "taken", Err: &npwg.TakenError{}}
	delegated := &delegate.AttachError{Network: "acme/lan", Ifname: "net1", Err: types.NewError(types.ErrTryAgainLater, "busy", "")}
	for _, c := range []struct {
		err  error
		code uint
	}{
		{taken, types.ErrInvalidNetworkConfig},
		{delegated, types.ErrTryAgainLater},
		{errors.New("disk full"), types.ErrInternal},
	} {
		err := addError(pod, c.err)
		var cniErr *types.Error
		if !errors.As(err, &cniErr) || cniErr.Code != c.code || !errors.Is(err, c.err) {
			t.Errorf("%v: got %+v, want code %d wrapping the cause", c.err, cniErr, c.code)
			continue
		}
		if n := strings.Count(cniErr.Msg, "acme/a1"); n != 1 {
			t.Errorf("%q names the pod %d times, want once", cniErr.Msg, n)
		}
	}
}
