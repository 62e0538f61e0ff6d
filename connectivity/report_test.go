package connectivity

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/loom-cni/loom/policy"
	"github.com/loom-cni/loom/policy/oracle"
)

func result(from, to string, n policy.NetworkID, f oracle.Family, proto string, port uint16, allowed, reached bool) Result {
	key := func(s string) policy.PodKey {
		ns, name, _ := strings.Cut(s, "/")
		return policy.PodKey{Namespace: ns, Name: name}
	}
	addr := netip.MustParseAddr("10.0.0.2")
	if f == 6 {
		addr = netip.MustParseAddr("fd00::2")
	}
	return Result{
		Probe: Probe{
			Connection: oracle.Connection{From: key(from), To: key(to), Network: n, Family: f, Protocol: proto, Port: port},
			Address:    addr,
			Expected:   oracle.Verdict{Allowed: allowed, Reason: "because"},
		},
		Reached: reached,
		Detail:  map[bool]string{false: "timeout"}[reached],
	}
}

func TestReport(t *testing.T) {
	results := []Result{
		result("a/x", "a/y", policy.Primary, 4, ICMP, 0, true, true),
		result("a/x", "a/y", policy.Primary, 4, TCP, 80, true, true),
		result("a/x", "a/y", policy.Primary, 4, TCP, 7007, false, false),
		result("a/y", "a/x", policy.Primary, 4, ICMP, 0, false, false),
		result("a/x", "b/z", policy.Primary, 6, UDP, 7007, false, true),
		result("b/z", "a/x", "infra/lan", 4, TCP, 7007, true, false),
	}
	var b strings.Builder
	Report(&b, results)
	out := b.String()
	for _, want := range []string{
		"network primary, IPv4: 4 probes (ICMP; TCP to 80,7007)\n",
		"network primary, IPv6: 1 probes (UDP to 7007)\n",
		"network infra/lan, IPv4: 1 probes (TCP to 7007)\n",
		"a/x         ✓·   (1)\n", // a/x → a/y: some allowed and reached, one denied and blocked
		"a/y     ·        (2)\n",
		"LEAK a/x → b/z on primary, IPv6 UDP/7007 (fd00::2): the policy denies it (because), the probe got through",
		"DROP b/z → a/x on infra/lan, IPv4 TCP/7007 (10.0.0.2): the policy allows it (because), the probe was blocked (timeout)",
		"2 of 6 probes differ from the policy",
		"6 probes: 4 matched, 1 leaks, 1 drops\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "every one matches") {
		t.Errorf("report of leaks and drops says every one matches:\n%s", out)
	}
	b.Reset()
	Report(&b, results[:4])
	if !strings.HasSuffix(b.String(), "4 probes: 4 matched, 0 leaks, 0 drops: every one matches the policy\n") {
		t.Errorf("report of matching probes:\n%s", b.String())
	}
}

func TestResultJSON(t *testing.T) {
	r := result("a/x", "b/z", "infra/lan", 6, UDP, 53, false, true)
	r.Source = netip.MustParseAddr("fd00::1")
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"from": "a/x", "to": "b/z", "network": "infra/lan", "family": 6.0, "protocol": "UDP", "port": 53.0,
		"source": "fd00::1", "address": "fd00::2", "allowed": false, "reason": "because", "reached": true} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v (%s)", k, got[k], want, data)
		}
	}
}
