package deviceplugin_test

import (
	"os"
	"testing"

	"github.com/loom-cni/loom/internal/leakcheck"
)

// TestMain fails the run when goroutines the tests started (plugins, fake kubelets, streams)
// are still running a moment after the last test.
func TestMain(m *testing.M) { os.Exit(leakcheck.Main(m)) }
