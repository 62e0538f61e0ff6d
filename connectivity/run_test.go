package connectivity

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loom-cni/loom/policy"
	"github.com/loom-cni/loom/policy/oracle"
)

// loopbackPods runs the probe commands in this process: every pod is the test's own network
// namespace, reached on loopback addresses. A pod in deaf says it listens but does not.
type loopbackPods struct {
	deaf map[policy.PodKey]bool
}

func (l loopbackPods) Probe(ctx context.Context, pod policy.PodKey, command string, stdin io.Reader, stdout io.Writer) error {
	switch {
	case command == DialCommand:
		return Dial(ctx, stdin, stdout)
	case command == ServeCommand && l.deaf[pod]:
		var ls Listen
		if err := json.NewDecoder(stdin).Decode(&ls); err != nil {
			return err
		}
		io.WriteString(stdout, Ready+"\n")
		io.Copy(io.Discard, stdin)
		return nil
	case command == ServeCommand:
		return Serve(ctx, stdin, stdout)
	}
	return os.ErrInvalid
}

func freePort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// TestRunOnLoopback sends real TCP, UDP and (as root) ICMP probes to a listener and to a pod
// that listens nowhere: the first are reached, the second are not, and the report says so.
func TestRunOnLoopback(t *testing.T) {
	a, b, deaf := policy.PodKey{Namespace: "t", Name: "a"}, policy.PodKey{Namespace: "t", Name: "b"}, policy.PodKey{Namespace: "t", Name: "deaf"}
	open, closed := freePort(t), freePort(t)
	lo4, lo6, other := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.2")
	allowed := oracle.Verdict{Allowed: true, Reason: "test"}
	probe := func(to policy.PodKey, f oracle.Family, proto string, port uint16, src, dst netip.Addr) Probe {
		return Probe{Connection: oracle.Connection{From: a, To: to, Family: f, Protocol: proto, Port: port}, Source: src, Address: dst, Expected: allowed}
	}
	probes := []Probe{
		probe(b, 4, TCP, open, lo4, lo4),
		probe(b, 4, UDP, open, lo4, lo4),
		probe(deaf, 4, TCP, closed, lo4, other),
		probe(deaf, 4, UDP, closed, lo4, other),
	}
	if ln, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		ln.Close()
		probes = append(probes, probe(b, 6, TCP, open, lo6, lo6), probe(b, 6, UDP, open, lo6, lo6))
	} else {
		t.Logf("no IPv6 on loopback (%v): IPv4 only", err)
		lo6 = netip.Addr{}
	}
	if os.Geteuid() == 0 {
		probes = append(probes, probe(b, 4, ICMP, 0, lo4, lo4))
		if lo6.IsValid() {
			probes = append(probes, probe(b, 6, ICMP, 0, lo6, lo6))
		}
	}
	var progress strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	results, err := Run(ctx, loopbackPods{deaf: map[policy.PodKey]bool{deaf: true}}, probes, Options{Timeout: 500 * time.Millisecond, Parallel: 4, Pods: 2, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != len(probes) {
		t.Fatalf("%d results for %d probes", len(results), len(probes))
	}
	for i, r := range results {
		if r.Probe != probes[i] {
			t.Errorf("result %d is of %s, want %s", i, r.Probe, probes[i])
		}
		wantReached := r.To != deaf
		if r.Reached != wantReached {
			t.Errorf("%s: reached=%v (%s), want %v", r.Probe, r.Reached, r.Detail, wantReached)
		}
		if !r.Reached && r.Detail == "" {
			t.Errorf("%s: blocked without a detail", r.Probe)
		}
	}
	if s := Summarize(results); s.Drops != 2 || s.Leaks != 0 || s.Matched != len(probes)-2 {
		t.Errorf("summary %s, want the 2 probes to t/deaf dropped", s)
	}
	if !strings.Contains(progress.String(), "probing") {
		t.Errorf("progress %q says nothing", progress.String())
	}
}

// TestRunFailsWhenAListenerCannotOpen: a probe command that fails is an error, not a verdict.
func TestRunFailsWhenAListenerCannotOpen(t *testing.T) {
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := uint16(ln.Addr().(*net.TCPAddr).Port)
	a, b := policy.PodKey{Namespace: "t", Name: "a"}, policy.PodKey{Namespace: "t", Name: "b"}
	lo := netip.MustParseAddr("127.0.0.1")
	probes := []Probe{{Connection: oracle.Connection{From: a, To: b, Family: 4, Protocol: TCP, Port: busy}, Source: lo, Address: lo}}
	_, err = Run(context.Background(), loopbackPods{}, probes, Options{Timeout: 200 * time.Millisecond})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Run with port %d taken: %v, want the listener's EADDRINUSE", busy, err)
	}
}
