// Package simtest is what an end-to-end test needs to run against a simulated cluster:
// start one for the test (or skip, saying why, when the machine cannot), tear it down when
// the test ends, and put the nodes' logs into the test log when it fails.
//
// A package using it lets its test binary serve as the node supervisor:
//
//	func TestMain(m *testing.M) { os.Exit(simtest.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		c := simtest.Start(t, nil) // the real loomd from LOOM_BIN_DIR
//		...
//	}
package simtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loom-cni/loom/e2e/sim"
)

// Main runs the tests, or, when the binary was started as a node supervisor, the supervisor;
// it returns the exit code for os.Exit.
func Main(m *testing.M) int {
	if len(os.Args) > 1 && os.Args[1] == sim.ReexecArg {
		return sim.ReexecMain(os.Args[2:])
	}
	return m.Run()
}

// StandInLoomd writes a stand-in for loomd into a temporary directory and returns the
// command: like loomd once ready, it publishes the default network (the node's
// /etc/loom/net.d/loom-default.conflist, which the sim writes in sim.ModeBridge) as
// /etc/cni/net.d/00-loom.conflist, then waits. In Loom's own modes there is no default
// network to publish; it publishes a bridge without addresses instead, enough for the node
// to be Ready (its pods run without an IP, so they never count as Running). It serves no
// /readyz: set Options.LoomdWithoutHealth.
func StandInLoomd(t testing.TB) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "loomd")
	const script = `#!/bin/sh
if [ -e /etc/loom/net.d/loom-default.conflist ]; then
	cp /etc/loom/net.d/loom-default.conflist /etc/cni/net.d/.00-loom.tmp
else
	echo '{"cniVersion":"1.1.0","name":"loom-stand-in","plugins":[{"type":"bridge","bridge":"cni0"}]}' >/etc/cni/net.d/.00-loom.tmp
fi
mv /etc/cni/net.d/.00-loom.tmp /etc/cni/net.d/00-loom.conflist
exec sleep infinity
`
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return []string{path}
}

// Start brings up a cluster for the test with the options from the environment, the test
// binary as node supervisor and a temporary directory, as configure (if not nil) then
// adjusts them. It skips the test when not root or when a tool is missing, and tears the
// cluster down when the test ends.
func Start(t testing.TB, configure func(*sim.Options)) *sim.Cluster {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the simulated cluster needs root: network and mount namespaces, links, mounts")
	}
	o := sim.OptionsFromEnv(os.Getenv)
	if o.KubeAPIServer == "" || o.Etcd == "" || o.CNIPluginsDir == "" {
		t.Skip("LOOM_KUBE_APISERVER, LOOM_ETCD and LOOM_CNI_PLUGINS_DIR must name kube-apiserver, etcd and the reference CNI plugins: run make tools and test through make, or export them")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	o.Dir = t.TempDir()
	o.SupervisorCommand = []string{self, sim.ReexecArg}
	o.Ephemeral = true
	o.Progress = logWriter{t}
	if configure != nil {
		configure(&o)
	}
	if len(o.Loomd) == 0 {
		if _, statErr := os.Stat(filepath.Join(o.BinDir, "loomd")); o.BinDir == "" || statErr != nil {
			t.Skip("no loomd in LOOM_BIN_DIR: run make build and test through make")
		}
	}
	start := time.Now()
	c, err := sim.Up(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("sim up took %.1fs", time.Since(start).Seconds())
	t.Cleanup(func() {
		if t.Failed() {
			DumpLogs(t, c)
		}
		if err := c.Down(context.Background()); err != nil {
			t.Errorf("sim down: %v", err)
		}
	})
	return c
}

// DumpLogs puts the end of every node's supervisor and loomd logs, and of loom-controller's
// and BIRD's, into the test log.
func DumpLogs(t testing.TB, c *sim.Cluster) {
	t.Helper()
	for _, n := range c.Nodes() {
		for _, name := range []string{"supervisor.log", "loomd.log"} {
			dumpLog(t, n.Name+" "+name, filepath.Join(n.Dir, name))
		}
	}
	for _, name := range []string{"controller.log", "bird.log"} {
		dumpLog(t, name, filepath.Join(c.Dir(), name))
	}
}

func dumpLog(t testing.TB, what, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	lines = lines[max(0, len(lines)-40):]
	t.Logf("--- %s (last %d lines)\n%s", what, len(lines), strings.Join(lines, "\n"))
}

// logWriter sends Up's and Down's progress lines to the test log.
type logWriter struct{ t testing.TB }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
