package metrics

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Path is where the health servers of loomd and loom-controller serve the metrics.
const Path = "/metrics"

// scrapeTimeout bounds one scrape: a collector that hangs (an API call that never answers)
// must not hold scrapes, and their goroutines, forever.
const scrapeTimeout = 10 * time.Second

// NewRegistry returns a registry holding the Go runtime and process collectors, in which a
// binary registers its own metrics.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler serves the metrics of reg in the Prometheus exposition formats. A collector that
// fails (a ledger it cannot read) is logged and left out; the rest are served.
func Handler(reg *prometheus.Registry, log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.With("component", "metrics").Handler(), slog.LevelWarn),
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            reg,
		MaxRequestsInFlight: 4,
		Timeout:             scrapeTimeout,
	})
}
