package podruntime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestStore(t *testing.T) {
	s, err := OpenStore(filepath.Join(t.TempDir(), "sandboxes"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	a := Sandbox{ContainerID: strings.Repeat("a", 64), Namespace: "ns", Pod: "p", Created: now.Add(time.Second)}
	b := Sandbox{ContainerID: strings.Repeat("b", 64), Namespace: "ns", Pod: "p", Created: now}
	c := Sandbox{ContainerID: strings.Repeat("c", 64), Namespace: "ns", Pod: "q", Created: now}
	for _, sb := range []Sandbox{a, b, c} {
		if err = s.Put(sb); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ForPod("ns", "p")
	if err != nil || len(got) != 2 || got[0].ContainerID != b.ContainerID || got[1].ContainerID != a.ContainerID {
		t.Fatalf("ForPod = %v, %v; want b then a (oldest first)", got, err)
	}
	if err := s.Delete(a.ContainerID); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(a.ContainerID); err != nil {
		t.Errorf("deleting a deleted record: %v", err)
	}
	all, _ := s.List()
	if len(all) != 2 {
		t.Errorf("List = %v after one delete, want 2 records", all)
	}
	if none, err := ListSandboxes(filepath.Join(t.TempDir(), "missing")); err != nil || none != nil {
		t.Errorf("ListSandboxes of a missing directory = %v, %v", none, err)
	}
}

func TestNetNSName(t *testing.T) {
	id := newContainerID()
	if len(id) != 64 {
		t.Fatalf("container id %q is not 64 hex digits", id)
	}
	if got := netnsName("kube-system", "coredns-1", id); got != "kube-system_coredns-1_"+id[:8] {
		t.Errorf("netnsName = %q", got)
	}
	if got := netnsName("ns", strings.Repeat("p", 253), id); len(got) > 255 {
		t.Errorf("netnsName is %d characters long", len(got))
	}
}

func TestNetNSPrivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creating network namespaces needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	path := filepath.Join(dir, "pod")
	if err := createNetNS(path); err != nil {
		t.Fatal(err)
	}
	if !netnsPinned(path) {
		t.Fatal("namespace not pinned")
	}
	if err := createNetNS(path); err == nil {
		t.Error("a second namespace was pinned on the same path")
	}
	if err := removeNetNS(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("pin still there: %v", err)
	}
	if err := removeNetNS(path); err != nil {
		t.Errorf("removing a removed namespace: %v", err)
	}
}
