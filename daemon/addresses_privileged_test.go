package daemon

import (
	"os/exec"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/loom-cni/loom/internal/netnstest"
)

// TestDefaultRouteLink checks that the default-route interface is the one the IPv4 default
// route of the namespace goes through, as macvlan picks its master, and none without one.
func TestDefaultRouteLink(t *testing.T) {
	name, h := netnstest.New(t)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	in := func() (link string) {
		t.Helper()
		if err := h.Do(func(ns.NetNS) error { link = DefaultRouteLink(); return nil }); err != nil {
			t.Fatal(err)
		}
		return link
	}
	run("link", "add", "up0", "type", "veth", "peer", "name", "side0")
	run("link", "add", "up1", "type", "veth", "peer", "name", "side1")
	for _, l := range []string{"up0", "side0", "up1", "side1"} {
		run("link", "set", l, "up")
	}
	run("addr", "add", "192.0.2.1/24", "dev", "up0")
	run("addr", "add", "198.51.100.1/24", "dev", "up1")
	if got := in(); got != "" {
		t.Errorf("no default route: got %q, want none", got)
	}
	run("route", "add", "default", "via", "198.51.100.2", "dev", "up1")
	if got := in(); got != "up1" {
		t.Errorf("default route via up1: got %q", got)
	}
}
