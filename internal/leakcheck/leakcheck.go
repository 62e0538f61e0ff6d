// Package leakcheck fails a test binary whose tests leave goroutines running: plugins, fake
// kubelets, gRPC streams and watchers must all stop when their test ends.
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

// settle is how long goroutines get to finish after the last test.
const settle = 2 * time.Second

// Main runs the tests and returns the exit code: m's, or 1 when more goroutines run a moment
// after the last test than before the first, with their stacks printed. Use it as
//
//	func TestMain(m *testing.M) { os.Exit(leakcheck.Main(m)) }
func Main(m *testing.M) int {
	before := runtime.NumGoroutine()
	code := m.Run()
	if code != 0 {
		return code
	}
	deadline := time.Now().Add(settle)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		fmt.Fprintf(os.Stderr, "%d goroutines left running, %d before the tests:\n%s\n", n, before, buf[:runtime.Stack(buf, true)])
		return 1
	}
	return 0
}
