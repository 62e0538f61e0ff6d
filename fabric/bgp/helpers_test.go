// loomd is built with Multipath TCP off for listeners (TCP MD5 and GTSM need plain TCP
// sockets; see checkTCPMD5), and so is this test binary.
//
//go:debug multipathtcp=0

package bgp

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// recordingSink is a RouteSink that keeps the routes it is given and every call made.
type recordingSink struct {
	mu     sync.Mutex
	routes map[netip.Prefix]netip.Addr
	ops    []string
	sweeps [][]netip.Prefix
	fail   map[netip.Prefix]int // failures still to return for a prefix
}

func newRecordingSink() *recordingSink {
	return &recordingSink{routes: make(map[netip.Prefix]netip.Addr), fail: make(map[netip.Prefix]int)}
}

func (r *recordingSink) Replace(dst netip.Prefix, nextHop netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, fmt.Sprintf("replace %s via %s", dst, nextHop))
	if r.fail[dst] > 0 {
		r.fail[dst]--
		return fmt.Errorf("injected failure for %s", dst)
	}
	r.routes[dst] = nextHop
	return nil
}

func (r *recordingSink) Delete(dst netip.Prefix) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, fmt.Sprintf("delete %s", dst))
	delete(r.routes, dst)
	return nil
}

func (r *recordingSink) Sweep(keep []netip.Prefix) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, "sweep")
	r.sweeps = append(r.sweeps, slices.Clone(keep))
	return nil
}

func (r *recordingSink) snapshot() map[netip.Prefix]netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[netip.Prefix]netip.Addr, len(r.routes))
	for k, v := range r.routes {
		out[k] = v
	}
	return out
}

func (r *recordingSink) calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ops)
}

func (r *recordingSink) sweepCalls() [][]netip.Prefix {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sweeps)
}

// hasRoutes reports whether the sink holds exactly want.
func (r *recordingSink) hasRoutes(want map[netip.Prefix]netip.Addr) bool {
	got := r.snapshot()
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// testLogger writes to the test's log until the test ends; GoBGP goroutines that outlive
// a stopped speaker may still log, and those records are dropped.
func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

// freePort returns a TCP port that is free on 127.0.0.1 right now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// loopback returns 127.0.0.n.
func loopback(n byte) netip.Addr {
	return netip.AddrFrom4([4]byte{127, 0, 0, n})
}

// testConfig is a speaker on 127.0.0.n with timers short enough for tests.
func testConfig(n byte, port int) Config {
	return Config{
		RouterID:          loopback(n),
		ListenAddresses:   []netip.Addr{loopback(n)},
		ListenPort:        port,
		HoldTime:          3 * time.Second,
		KeepaliveInterval: time.Second,
		ConnectRetry:      time.Second,
		RestartTime:       30 * time.Second,
	}
}

// meshOf returns the mesh peers 127.0.0.n for each n, all on port.
func meshOf(port int, ns ...byte) []Peer {
	var peers []Peer
	for _, n := range ns {
		peers = append(peers, Peer{Address: loopback(n), Port: port, Description: fmt.Sprintf("node-%d", n)})
	}
	return peers
}

// startSpeaker creates a speaker from cfg, lets setup configure it before Start, starts it
// and stops it when the test ends, unless the test stopped it first.
func startSpeaker(t testing.TB, cfg Config, setup func(*Speaker)) (*Speaker, *recordingSink) {
	t.Helper()
	sink := newRecordingSink()
	sp, err := New(cfg, sink, testLogger(t).With("node", cfg.RouterID.String()))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if setup != nil {
		setup(sp)
	}
	if err := sp.Start(context.Background()); err != nil {
		t.Fatalf("Start %s: %v", cfg.RouterID, err)
	}
	t.Cleanup(func() {
		// Tear down with a Cease: a graceful stop would make the other speakers of the test
		// mark its paths stale, which races inside GoBGP (see the design notes).
		sp.mu.Lock()
		sp.gracefulStop = false
		sp.mu.Unlock()
		sp.Stop()
	})
	return sp, sink
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitEstablished waits until sp has an established session with every address in peers.
func waitEstablished(t testing.TB, sp *Speaker, peers ...netip.Addr) {
	t.Helper()
	waitFor(t, 15*time.Second, fmt.Sprintf("sessions of %s with %v", sp.cfg.RouterID, peers), func() bool {
		states, err := sp.Peers(context.Background())
		if err != nil {
			t.Fatalf("Peers: %v", err)
		}
		up := map[netip.Addr]bool{}
		for _, st := range states {
			if st.State == "established" {
				up[st.Address] = true
			}
		}
		for _, p := range peers {
			if !up[p] {
				return false
			}
		}
		return true
	})
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func advertise(t testing.TB, sp *Speaker, prefixes ...string) {
	t.Helper()
	var ps []netip.Prefix
	for _, p := range prefixes {
		ps = append(ps, mustPrefix(p))
	}
	if err := sp.Advertise(context.Background(), ps); err != nil {
		t.Fatalf("Advertise %v: %v", prefixes, err)
	}
}
