package sim_test

import (
	"os"
	"testing"

	"github.com/loom-cni/loom/e2e/sim/simtest"
)

// TestMain lets the test binary double as the node supervisor.
func TestMain(m *testing.M) { os.Exit(simtest.Main(m)) }
