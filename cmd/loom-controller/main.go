// Command loom-controller is Loom's cluster-wide controller. One replica at a time leads
// (a Lease in the lease namespace); the leader keeps the cluster's address blocks honest:
// it deletes the IPBlocks of nodes that no longer exist, so their addresses return to the
// pool and the other nodes withdraw their routes, and it releases allocations whose pod is
// gone (a DEL that never came, a node that died with pods on it). The leader also writes
// every Tenant's status: its namespaces, pods and addresses, and whether its spec is valid
// and its namespaces its alone.
//
// Every replica, leader or not, serves the admission webhook: the API server asks it before
// it stores a Pod, a NetworkAttachmentDefinition or a Tenant, a change of a pod's networks
// annotation or an ephemeral container added to a pod, and it refuses those that break a
// tenant's rules, so a bad pod is rejected at kubectl apply rather than stuck in
// ContainerCreating. The replicas share the webhook's certificate through a Secret and each
// keeps the ValidatingWebhookConfiguration that points the API server at them.
//
// This is the only place that wires the controller together and the only one allowed to
// exit.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/loom-cni/loom/metrics"
)

type options struct {
	kubeconfig     string
	healthAddress  string
	leaseNamespace string
	leaseName      string
	interval       time.Duration
	grace          time.Duration
	logLevel       string

	webhookAddress    string
	webhookURL        string
	webhookService    string
	webhookSecret     string
	webhookConfigName string
}

func main() {
	var o options
	flag.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty means in-cluster configuration")
	flag.StringVar(&o.healthAddress, "health-address", ":9466", "address of /healthz and /metrics; empty disables them")
	flag.StringVar(&o.leaseNamespace, "lease-namespace", "kube-system", "namespace of the leader election Lease")
	flag.StringVar(&o.leaseName, "lease-name", "loom-controller", "name of the leader election Lease")
	flag.DurationVar(&o.interval, "interval", 30*time.Second, "how often the leader reconciles address blocks")
	flag.DurationVar(&o.grace, "grace", time.Minute, "age an allocation must reach before it counts as leaked")
	flag.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	flag.StringVar(&o.webhookAddress, "webhook-address", ":9443", "address the admission webhook serves on (TLS); empty disables the webhook")
	flag.StringVar(&o.webhookURL, "webhook-url", "", "https URL the API server calls the webhook at; empty means through --webhook-service")
	flag.StringVar(&o.webhookService, "webhook-service", "kube-system/loom-controller", "namespace/name of the Service (port 443) the API server calls the webhook through")
	flag.StringVar(&o.webhookSecret, "webhook-secret", "kube-system/loom-webhook-tls", "namespace/name of the Secret holding the webhook's CA and serving certificate")
	flag.StringVar(&o.webhookConfigName, "webhook-config-name", "loom", "name of the ValidatingWebhookConfiguration")
	flag.Parse()

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "loom-controller: --log-level:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("loom-controller stopped", "error", err)
		os.Exit(1)
	}
}

// clients are the API clients loom-controller works with.
type clients struct {
	kube kubernetes.Interface
	dyn  dynamic.Interface
	nads nadclient.Interface
}

func newClients(kubeconfig string) (clients, error) {
	var rc *rest.Config
	var err error
	if kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return clients{}, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	rc.UserAgent = "loom-controller"
	var c clients
	if c.kube, err = kubernetes.NewForConfig(rc); err != nil {
		return clients{}, err
	}
	if c.dyn, err = dynamic.NewForConfig(rc); err != nil {
		return clients{}, err
	}
	if c.nads, err = nadclient.NewForConfig(rc); err != nil {
		return clients{}, err
	}
	return c, nil
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	cs, err := newClients(o.kubeconfig)
	if err != nil {
		return err
	}
	kube, dyn := cs.kube, cs.dyn
	identity, err := os.Hostname()
	if err != nil {
		return err
	}
	identity = fmt.Sprintf("%s_%d", identity, os.Getpid())

	reg := metrics.NewRegistry()
	m := metrics.NewController(reg)
	if o.healthAddress != "" {
		srv := &http.Server{Addr: o.healthAddress, Handler: healthz(metrics.Handler(reg, log)), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("health server", "error", err)
			}
		}()
		defer srv.Close()
	}

	// A replica whose webhook stops serving stops as a whole, so that it is restarted rather
	// than left running with pod creation failing against it.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	caches := newClusterCaches(kube, dyn, cs.nads, log)
	caches.start(ctx)
	if o.webhookAddress != "" {
		if err := startWebhook(ctx, cancel, o, kube, caches, m, log); err != nil {
			return err
		}
	}

	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: o.leaseNamespace, Name: o.leaseName},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	rec := newReclaimer(kube, dyn, o.interval, o.grace, m, log)
	status := &tenantStatusController{caches: caches, kube: kube, dyn: dyn, interval: o.interval, metrics: m, log: log}
	policies := newPolicyEvents(kube, dyn, log)
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		ReleaseOnCancel: true,
		LeaseDuration:   15 * time.Second,
		RenewDeadline:   10 * time.Second,
		RetryPeriod:     2 * time.Second,
		Name:            o.leaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				log.Info("leading", "identity", identity)
				m.SetLeader(true)
				var wg sync.WaitGroup
				wg.Go(func() { rec.run(ctx) })
				wg.Go(func() { status.run(ctx) })
				wg.Go(func() { policies.run(ctx) })
				wg.Wait()
			},
			OnStoppedLeading: func() {
				m.SetLeader(false)
				log.Info("no longer leading", "identity", identity)
			},
		},
	})
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return nil
}

// startWebhook makes sure of the webhook's certificate, starts serving the webhook and keeps
// the certificate and the ValidatingWebhookConfiguration current in the background. If the
// server fails, it cancels ctx with the reason.
func startWebhook(ctx context.Context, cancel context.CancelCauseFunc, o options, kube kubernetes.Interface, caches *clusterCaches,
	m *metrics.Controller, log *slog.Logger) error {
	ep, err := parseEndpoint(o.webhookURL, o.webhookService)
	if err != nil {
		return err
	}
	secretNS, secretName, ok := strings.Cut(o.webhookSecret, "/")
	if !ok || secretNS == "" || secretName == "" {
		return fmt.Errorf("parse --webhook-secret %q: want namespace/name", o.webhookSecret)
	}
	if o.webhookConfigName == "" {
		return errors.New("--webhook-config-name is empty")
	}
	keeper := &certKeeper{
		secret: &certSecret{secrets: kube.CoreV1(), namespace: secretNS, name: secretName, hosts: ep.hosts(), now: time.Now},
		log:    log,
	}
	// No certificate, no webhook: wait for the API server rather than serve without one.
	for {
		if _, err = keeper.ensure(ctx); err == nil {
			break
		}
		log.Warn("webhook certificate", "error", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	a := &admission{dirs: caches, nads: caches.nads, pods: caches.podsIn, nadPools: caches.nadPools, log: log}
	srv, err := listenWebhook(o.webhookAddress, webhookHandler(a, m, log), keeper.getCertificate, log)
	if err != nil {
		return err
	}
	go func() {
		if err := srv.serve(ctx); err != nil {
			cancel(err)
		}
	}()
	hooks := kube.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	go keeper.run(ctx, kube, o.interval, func(ctx context.Context) error {
		changed, err := registerWebhook(ctx, hooks, webhookConfiguration(o.webhookConfigName, ep, keeper.caBundle()))
		if changed {
			log.Info("webhook registered", "configuration", o.webhookConfigName, "endpoint", ep.String())
		}
		return err
	})
	log.Info("webhook serving", "address", srv.addr().String(), "endpoint", ep.String())
	return nil
}

// healthz serves /healthz and, with metricsHandler, the metrics.
func healthz(metricsHandler http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+metrics.Path, metricsHandler)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	return mux
}
