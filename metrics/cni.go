package metrics

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/loom-cni/loom/cniserver"
	"github.com/loom-cni/loom/delegate"
)

// operations are the CNI commands loomd serves, as the operation label names them; a command
// that is none of them counts as opOther.
var operations = [...]string{delegate.OpAdd, delegate.OpDel, delegate.OpCheck, delegate.OpGC, delegate.OpStatus, opOther}

const opOther = "other"

// maxPlugins bounds the plugin label: the types NetworkAttachmentDefinitions name are the
// users', and a typo must not make a new series on every ADD forever.
const maxPlugins = 64

// pluginOther is the plugin label of the calls whose plugin type came after maxPlugins others.
const pluginOther = "other"

// durationBuckets cover CNI calls from an in-process DEL (a millisecond) to an ADD that waits
// for the pod to reach the cache or a VF to move (seconds), up to the runtime's timeouts.
var durationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// CNI counts the CNI calls loomd serves (Handler) and the calls its orchestrator makes to
// each network type (AttachmentCalled, a delegate.Observer).
type CNI struct {
	requests *prometheus.CounterVec   // operation
	errors   *prometheus.CounterVec   // operation, code
	inFlight *prometheus.GaugeVec     // operation
	duration *prometheus.HistogramVec // operation
	ops      [len(operations)]opMetrics

	calls        *prometheus.CounterVec   // operation, network_type, plugin
	callErrors   *prometheus.CounterVec   // operation, network_type, plugin
	callDuration *prometheus.HistogramVec // operation, network_type, plugin

	mu      sync.RWMutex
	byCall  map[callKey]*callMetrics
	plugins map[string]bool // the plugin label values in use
}

var _ delegate.Observer = (*CNI)(nil)

// opMetrics are the children of one operation, resolved once.
type opMetrics struct {
	name     string
	requests prometheus.Counter
	inFlight prometheus.Gauge
	duration prometheus.Observer
}

type callKey struct{ op, kind, plugin string }

// callMetrics are the children of one (operation, network type, plugin).
type callMetrics struct {
	calls, errors prometheus.Counter
	duration      prometheus.Observer
}

// NewCNI registers the CNI metrics with reg.
func NewCNI(reg prometheus.Registerer) *CNI {
	m := &CNI{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loom_cni_requests_total",
			Help: "CNI calls loomd answered for the loom plugin, by operation.",
		}, []string{"operation"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loom_cni_request_errors_total",
			Help: "CNI calls loomd answered with an error, by operation and CNI error code.",
		}, []string{"operation", "code"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "loom_cni_requests_in_flight",
			Help: "CNI calls loomd is serving now, by operation.",
		}, []string{"operation"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "loom_cni_request_duration_seconds",
			Help:    "Time loomd took to answer a CNI call, by operation.",
			Buckets: durationBuckets,
		}, []string{"operation"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loom_cni_delegate_calls_total",
			Help: "Calls loomd's orchestrator made to one attachment of a pod, by operation, network type (attachment kind) and plugin type.",
		}, []string{"operation", "network_type", "plugin"}),
		callErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loom_cni_delegate_errors_total",
			Help: "Calls to one attachment of a pod that failed, by operation, network type (attachment kind) and plugin type.",
		}, []string{"operation", "network_type", "plugin"}),
		callDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "loom_cni_delegate_duration_seconds",
			Help:    "Time one call to an attachment of a pod took, by operation, network type (attachment kind) and plugin type.",
			Buckets: durationBuckets,
		}, []string{"operation", "network_type", "plugin"}),
		byCall:  map[callKey]*callMetrics{},
		plugins: map[string]bool{},
	}
	reg.MustRegister(m.requests, m.errors, m.inFlight, m.duration, m.calls, m.callErrors, m.callDuration)
	for i, op := range operations {
		m.ops[i] = opMetrics{
			name:     op,
			requests: m.requests.WithLabelValues(op),
			inFlight: m.inFlight.WithLabelValues(op),
			duration: m.duration.WithLabelValues(op),
		}
	}
	return m
}

// Handler returns h counting the calls it serves.
func (m *CNI) Handler(h cniserver.Handler) cniserver.Handler { return &countedHandler{next: h, m: m} }

type countedHandler struct {
	next cniserver.Handler
	m    *CNI
}

func (c *countedHandler) ServeCNI(ctx context.Context, req *cniserver.Request) ([]byte, error) {
	op := c.m.op(req.Command)
	op.inFlight.Inc()
	start := time.Now()
	out, err := c.next.ServeCNI(ctx, req)
	op.duration.Observe(time.Since(start).Seconds())
	op.inFlight.Dec()
	op.requests.Inc()
	if err != nil {
		c.m.errors.WithLabelValues(op.name, errorCode(err)).Inc()
	}
	return out, err
}

func (m *CNI) op(command string) *opMetrics {
	for i := range m.ops[:len(m.ops)-1] {
		if m.ops[i].name == command {
			return &m.ops[i]
		}
	}
	return &m.ops[len(m.ops)-1]
}

// errorCode is the CNI error code the loom binary reports for err.
func errorCode(err error) string {
	var ce *types.Error
	if errors.As(err, &ce) {
		return strconv.FormatUint(uint64(ce.Code), 10)
	}
	return strconv.FormatUint(uint64(types.ErrInternal), 10)
}

// AttachmentCalled counts one call to an attachment; the orchestrator calls it.
func (m *CNI) AttachmentCalled(op, kind, plugin string, took time.Duration, err error) {
	c := m.call(op, kind, plugin)
	c.calls.Inc()
	c.duration.Observe(took.Seconds())
	if err != nil {
		c.errors.Inc()
	}
}

// call returns the children of the combination, resolving them the first time.
func (m *CNI) call(op, kind, plugin string) *callMetrics {
	key := callKey{op, kind, plugin}
	m.mu.RLock()
	c := m.byCall[key]
	m.mu.RUnlock()
	if c != nil {
		return c
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if c = m.byCall[key]; c != nil {
		return c
	}
	label := plugin
	if !m.plugins[plugin] {
		if len(m.plugins) < maxPlugins {
			m.plugins[plugin] = true
		} else {
			label = pluginOther
		}
	}
	c = &callMetrics{
		calls:    m.calls.WithLabelValues(op, kind, label),
		errors:   m.callErrors.WithLabelValues(op, kind, label),
		duration: m.callDuration.WithLabelValues(op, kind, label),
	}
	if label == plugin {
		// The others share "other" without a map entry each: a flood of new types must not
		// grow the map either.
		m.byCall[key] = c
	}
	return c
}
