package vf_test

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/loom-cni/loom/internal/netnstest"
	"github.com/loom-cni/loom/sriov/vf"
)

// A veth has no VFs and refuses every VF setting, which is as far as the kernel of a machine
// without SR-IOV hardware lets the real Configurator be tested: the errors must say which PF,
// which VF and which setting.
func TestNetlinkOnAPFWithoutVFs(t *testing.T) {
	name, _ := netnstest.New(t)
	nsh, err := netns.GetFromPath(netnstest.Path(name))
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ltpf0"}, PeerName: "ltpf0p"}
	if err = h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	c := vf.NetlinkAt(h)

	if _, err = c.State("ltpf0", 0); !errors.Is(err, vf.ErrNoVF) {
		t.Errorf("state of vf 0 of a veth: %v, want ErrNoVF", err)
	}
	if _, err = c.State("ltnope", 0); err == nil {
		t.Error("state of a vf of a missing pf: no error")
	}

	want := vf.State{MAC: "02:00:00:00:00:01", VLAN: 100, SpoofChk: true, LinkState: vf.LinkAuto}
	err = c.Set("ltpf0", 2, want)
	if err == nil {
		t.Fatal("a veth accepted vf settings")
	}
	t.Logf("set on a veth: %v", err)
	if !errors.Is(err, unix.EOPNOTSUPP) {
		t.Errorf("set on a veth: %v, want EOPNOTSUPP", err)
	}
	settings := map[string]bool{}
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var se *vf.SetError
		if !errors.As(e, &se) {
			t.Fatalf("%v is no *SetError", e)
		}
		if se.PF != "ltpf0" || se.Index != 2 {
			t.Errorf("%v names %s", e, se.Key)
		}
		settings[se.Setting] = true
	}
	for _, s := range []string{"mac", "vlan", "spoofchk", "trust", "state", "rate"} {
		if !settings[s] {
			t.Errorf("no error names setting %s", s)
		}
	}
	if err := c.Set("ltpf0", 0, vf.State{LinkState: "up"}); err == nil || errors.As(err, new(*vf.SetError)) {
		t.Errorf("an invalid state reached the kernel: %v", err)
	}
}
