// Package netnstest gives privileged tests named network namespaces that carry the test
// process's PID in their name ("loomt-<pid>-<n>"), so parallel test binaries never collide and
// namespaces left by a crashed run are recognised and removed by the next one.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

const prefix = "loomt-"

var (
	counter atomic.Int64
	reap    sync.Once
)

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and links")
	}
}

// New creates a network namespace, removed when the test ends whatever its outcome, and
// returns its name and handle.
func New(t testing.TB) (string, ns.NetNS) {
	t.Helper()
	RequireRoot(t)
	reap.Do(reapStale)
	name := fmt.Sprintf("%s%d-%d", prefix, os.Getpid(), counter.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	h, err := ns.GetNS("/run/netns/" + name)
	if err != nil {
		exec.Command("ip", "netns", "del", name).Run()
		t.Fatalf("open netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		h.Close()
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return name, h
}

// Path is the file path of a namespace created by New.
func Path(name string) string { return "/run/netns/" + name }

// Run runs a command inside a namespace and returns its combined output.
func Run(t testing.TB, name string, argv ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", name}, argv...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s: %v: %s", name, strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// reapStale removes namespaces of earlier test processes that no longer exist.
func reapStale() {
	des, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, de := range des {
		rest, ok := strings.CutPrefix(de.Name(), prefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		exec.Command("ip", "netns", "del", de.Name()).Run()
	}
}
