package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/loom-cni/loom/e2e/sim"
	"github.com/loom-cni/loom/e2e/sim/simtest"
)

// TestMetrics scrapes loomd and loom-controller as Prometheus would: a pod with a secondary
// network moves node1's ADD counters, attachments and IPAM use, its deletion the DEL
// counters, its admission the webhook's decisions; the dataplane's metrics show node2.
func TestMetrics(t *testing.T) {
	c := simtest.Start(t, func(o *sim.Options) { o.Nodes = 2 })
	ctx := context.Background()
	e := newEnv(t, c, "e2e-metrics")
	loomMode := c.Options().Mode != sim.ModeBridge
	(&webhookEnv{t: t, c: c, ctx: ctx}).waitRegistered()

	before := scrapeLoomd(t, c, "node1")
	e.nad("pool-net", `{"cniVersion":"1.0.0","type":"macvlan","master":"eth0","mode":"bridge",
	  "ipam":{"type":"loom-ipam","pool":"e2e-metrics","range":"192.168.61.0/24","blockSize":28}}`)
	e.pod(podSpec{name: "m1", node: "node1", networks: "pool-net"})
	e.running("m1")
	added := scrapeLoomd(t, c, "node1")
	macvlan := []string{"network_type=cni", "plugin=macvlan"}
	expect(t, "after ADD", before, added, []change{
		{"loom_cni_requests_total", []string{"operation=ADD"}, atLeast(1)},
		{"loom_cni_request_duration_seconds", []string{"operation=ADD"}, atLeast(1)},
		{"loom_cni_delegate_calls_total", append(macvlan, "operation=ADD"), by(1)},
		{"loom_attachments", append(macvlan, "state=added"), by(1)},
		{"loom_ledger_containers", nil, by(1)},
		{"loom_ipam_allocated_addresses", []string{"pool=e2e-metrics"}, by(1)},
		{"loom_ipam_blocks", []string{"pool=e2e-metrics"}, by(1)},
	})
	if loomMode {
		expect(t, "after ADD", before, added, []change{
			{"loom_attachments", []string{"network_type=loom-primary", "plugin=loom-primary", "state=added"}, by(1)},
			{"loom_ipam_allocated_addresses", []string{"pool=default"}, by(1)},
			{"loom_policy_sync_duration_seconds", nil, atLeast(1)},
			{"loom_policy_pods", nil, by(1)},
		})
	}

	e.deletePod("m1")
	deleted := scrapeLoomd(t, c, "node1")
	expect(t, "after DEL", added, deleted, []change{
		{"loom_cni_requests_total", []string{"operation=DEL"}, atLeast(1)},
		{"loom_cni_delegate_calls_total", append(macvlan, "operation=DEL"), atLeast(1)},
		{"loom_attachments", append(macvlan, "state=added"), by(-1)},
		{"loom_ledger_containers", nil, by(-1)},
		{"loom_ipam_allocated_addresses", []string{"pool=e2e-metrics"}, by(-1)},
	})
	if v := deleted.value("loom_cni_request_errors_total", "operation=ADD"); v != before.value("loom_cni_request_errors_total", "operation=ADD") {
		t.Errorf("ADD errors went from %v to %v", before.value("loom_cni_request_errors_total", "operation=ADD"), v)
	}

	t.Run("Dataplane", func(t *testing.T) {
		switch c.Options().Mode {
		case sim.ModeBridge:
			t.Skip("the bridge mode has no dataplane of Loom's")
		case sim.ModeBGP:
			waitMetric(t, c, "node1", "a BGP session established", func(s scrape) bool {
				return s.count("loom_bgp_sessions", "state=established") >= 1
			})
		default:
			waitMetric(t, c, "node1", "node2 as a VXLAN peer", func(s scrape) bool {
				return s.value("loom_vxlan_peers", "path=vxlan") == 1 && s.value("loom_vxlan_routes", "path=vxlan") >= 1
			})
		}
	})

	t.Run("Controller", func(t *testing.T) {
		deadline := time.Now().Add(15 * time.Second)
		for {
			s := scrapeURL(t, "http://"+c.ControllerHealthAddress()+"/metrics")
			allowed := s.value("loom_webhook_decisions_total", "kind=Pod", "decision=allowed")
			leader := s.value("loom_controller_leader")
			if allowed >= 1 && leader == 1 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("loom-controller counts %v allowed pods (want the test's pod at least) and leader=%v", allowed, leader)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}

// scrape is one scrape of a /metrics endpoint, by metric name.
type scrape map[string]*dto.MetricFamily

// samples returns the samples of name that carry every label of labels ("name=value").
func (s scrape) samples(name string, labels ...string) []*dto.Metric {
	var out []*dto.Metric
	mf := s[name]
	if mf == nil {
		return nil
	}
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for _, l := range labels {
			k, v, _ := strings.Cut(l, "=")
			match = match && have[k] == v
		}
		if match {
			out = append(out, m)
		}
	}
	return out
}

// value sums the matching samples: their values, or for histograms and summaries how many
// observations they hold. A metric that is not there is 0.
func (s scrape) value(name string, labels ...string) float64 {
	sum := 0.0
	for _, m := range s.samples(name, labels...) {
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		case m.Summary != nil:
			sum += float64(m.GetSummary().GetSampleCount())
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum
}

// count is the number of matching samples.
func (s scrape) count(name string, labels ...string) int { return len(s.samples(name, labels...)) }

func parseScrape(t *testing.T, r io.Reader) scrape {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	return mfs
}

// scrapeLoomd scrapes the loomd of node where it serves, in the node's network namespace.
func scrapeLoomd(t *testing.T, c *sim.Cluster, node string) scrape {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd, err := c.NodeCmd(ctx, node, "curl", "-sSf", "--max-time", "5", "http://"+c.LoomdHealthAddress()+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scrape loomd on %s: %v", node, err)
	}
	return parseScrape(t, strings.NewReader(string(out)))
}

func scrapeURL(t *testing.T, url string) scrape {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("scrape %s: HTTP %d: %s", url, resp.StatusCode, b)
	}
	return parseScrape(t, resp.Body)
}

// waitMetric scrapes node's loomd until ok holds, for up to 20 s.
func waitMetric(t *testing.T, c *sim.Cluster, node, what string, ok func(scrape) bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if ok(scrapeLoomd(t, c, node)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("loomd's metrics on %s never showed %s", node, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// change is how a metric's value (summed over the samples with labels) must move between two
// scrapes.
type change struct {
	name   string
	labels []string
	ok     func(delta float64) (bool, string)
}

func by(want float64) func(float64) (bool, string) {
	return func(d float64) (bool, string) { return d == want, fmt.Sprintf("by %v", want) }
}

func atLeast(want float64) func(float64) (bool, string) {
	return func(d float64) (bool, string) { return d >= want, fmt.Sprintf("by %v or more", want) }
}

func expect(t *testing.T, when string, from, to scrape, changes []change) {
	t.Helper()
	for _, ch := range changes {
		a, b := from.value(ch.name, ch.labels...), to.value(ch.name, ch.labels...)
		if ok, want := ch.ok(b - a); !ok {
			t.Errorf("%s: %s%v went from %v to %v, want it to change %s", when, ch.name, ch.labels, a, b, want)
		}
	}
}
