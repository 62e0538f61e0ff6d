package attach_test

import (
	"context"
	"testing"

	"github.com/loom-cni/loom/internal/netnstest"
	"github.com/loom-cni/loom/sriov/attach"
)

// BenchmarkAddDel is one VF attached to a pod and given back, with host-local addresses and
// PF settings recorded in a file: the attachment's own share of a pod's ADD and DEL.
func BenchmarkAddDel(b *testing.B) {
	tb := newTestbed(b, 1)
	tb.att = attach.New(attach.Config{SysfsRoot: tb.tree.Root, PF: tb.rec, StateDir: tb.stateDir,
		CNIPath: []string{tb.plugins}, HostNetns: netnstest.Path(tb.node)})
	pod, _ := netnstest.New(b)
	call := tb.call("c1", pod, netPF, 0, "1.0.0", `,"vlan":100`+tb.ipam("10.79.0.0/24"))
	ctx := context.Background()
	for b.Loop() {
		res, err := tb.att.Add(ctx, call)
		if err != nil {
			b.Fatal(err)
		}
		if err := tb.att.Del(ctx, call, res); err != nil {
			b.Fatal(err)
		}
	}
}
