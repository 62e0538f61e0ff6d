package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
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

// Options are loom-controller's settings, from its flags.
type Options struct {
	Kubeconfig     string
	HealthAddress  string
	LeaseNamespace string
	LeaseName      string
	Interval       time.Duration
	Grace          time.Duration

	WebhookAddress    string
	WebhookURL        string
	WebhookService    string
	WebhookSecret     string
	WebhookConfigName string
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

// Run runs the controller until ctx is done: leader election and what the leader does, and
// on every replica the admission webhook and the health and metrics endpoints.
func Run(ctx context.Context, o Options, log *slog.Logger) error {
	cs, err := newClients(o.Kubeconfig)
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
	if o.HealthAddress != "" {
		srv := &http.Server{Addr: o.HealthAddress, Handler: healthz(metrics.Handler(reg, log)), ReadHeaderTimeout: 5 * time.Second}
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
	if o.WebhookAddress != "" {
		if err := startWebhook(ctx, cancel, o, kube, caches, m, log); err != nil {
			return err
		}
	}

	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: o.LeaseNamespace, Name: o.LeaseName},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	rec := newReclaimer(kube, dyn, o.Interval, o.Grace, m, log)
	status := &tenantStatusController{caches: caches, kube: kube, dyn: dyn, interval: o.Interval, metrics: m, log: log}
	policies := newPolicyEvents(kube, dyn, log)
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		ReleaseOnCancel: true,
		LeaseDuration:   15 * time.Second,
		RenewDeadline:   10 * time.Second,
		RetryPeriod:     2 * time.Second,
		Name:            o.LeaseName,
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
func startWebhook(ctx context.Context, cancel context.CancelCauseFunc, o Options, kube kubernetes.Interface, caches *clusterCaches,
	m *metrics.Controller, log *slog.Logger) error {
	ep, err := parseEndpoint(o.WebhookURL, o.WebhookService)
	if err != nil {
		return err
	}
	secretNS, secretName, ok := strings.Cut(o.WebhookSecret, "/")
	if !ok || secretNS == "" || secretName == "" {
		return fmt.Errorf("parse --webhook-secret %q: want namespace/name", o.WebhookSecret)
	}
	if o.WebhookConfigName == "" {
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
	srv, err := listenWebhook(o.WebhookAddress, webhookHandler(a, m, log), keeper.getCertificate, log)
	if err != nil {
		return err
	}
	go func() {
		if err := srv.serve(ctx); err != nil {
			cancel(err)
		}
	}()
	hooks := kube.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	go keeper.run(ctx, kube, o.Interval, func(ctx context.Context) error {
		changed, err := registerWebhook(ctx, hooks, webhookConfiguration(o.WebhookConfigName, ep, keeper.caBundle()))
		if changed {
			log.Info("webhook registered", "configuration", o.WebhookConfigName, "endpoint", ep.String())
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
