package sim_test

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/loom-cni/loom/e2e/sim"
)

// standInControllerArg, as the test binary's first argument, makes it a stand-in for
// loom-controller (see standInController).
const standInControllerArg = "loom-sim-test-controller"

// standInController plays loom-controller with its flags: it reads the cluster through
// --kubeconfig and serves /healthz on --health-address until SIGTERM.
func standInController(args []string) int {
	fs := flag.NewFlagSet("loom-controller", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "")
	health := fs.String("health-address", "", "")
	fs.Duration("interval", 0, "")
	fs.Duration("grace", 0, "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("stand-in controller: %d nodes\n", len(nodes.Items))
	l, err := net.Listen("tcp", *health)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(l); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// standInControllerCommand writes a program that runs this test binary as the stand-in.
func standInControllerCommand(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "loom-controller")
	script := fmt.Sprintf("#!/bin/sh\nexec %s %s \"$@\"\n", self, standInControllerArg)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func testController(t *testing.T, c *sim.Cluster) {
	ctx := context.Background()
	health := "http://" + net.JoinHostPort(apiServerHost(t, c), "9466") + "/healthz"
	client := &http.Client{Timeout: 2 * time.Second}
	healthy := func() bool {
		resp, err := client.Get(health)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	if !healthy() {
		t.Fatalf("loom-controller does not answer on %s", health)
	}
	// It started before the nodes registered; once restarted, it finds them.
	logFile := filepath.Join(c.Dir(), "controller.log")
	if log, _ := os.ReadFile(logFile); !strings.Contains(string(log), "stand-in controller: ") {
		t.Errorf("controller.log: %s", log)
	}
	if err := c.StopController(); err != nil {
		t.Fatal(err)
	}
	if healthy() {
		t.Fatal("loom-controller still answers after StopController")
	}
	start := time.Now()
	if err := c.StartController(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("loom-controller restart took %.1fs", time.Since(start).Seconds())
	if !healthy() {
		t.Errorf("loom-controller does not answer on %s after StartController", health)
	}
	if log, _ := os.ReadFile(logFile); !strings.Contains(string(log), "stand-in controller: 3 nodes") {
		t.Errorf("controller.log: %s", log)
	}
}
