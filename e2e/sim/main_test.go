package sim_test

import (
	"os"
	"testing"

	"github.com/loom-cni/loom/e2e/sim/simtest"
)

// TestMain lets the test binary double as the node supervisor and as loom-controller's
// stand-in.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == standInControllerArg {
		os.Exit(standInController(os.Args[2:]))
	}
	os.Exit(simtest.Main(m))
}
