// Command loom-controller is Loom's cluster-wide controller. One replica at a time leads
// (a Lease in the lease namespace); the leader keeps the cluster's address blocks honest:
// it deletes the IPBlocks of nodes that no longer exist, so their addresses return to the
// pool and the other nodes withdraw their routes, and it releases allocations whose pod is
// gone (a DEL that never came, a node that died with pods on it).
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
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

type options struct {
	kubeconfig     string
	healthAddress  string
	leaseNamespace string
	leaseName      string
	interval       time.Duration
	grace          time.Duration
	logLevel       string
}

func main() {
	var o options
	flag.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty means in-cluster configuration")
	flag.StringVar(&o.healthAddress, "health-address", ":9466", "address of /healthz; empty disables it")
	flag.StringVar(&o.leaseNamespace, "lease-namespace", "kube-system", "namespace of the leader election Lease")
	flag.StringVar(&o.leaseName, "lease-name", "loom-controller", "name of the leader election Lease")
	flag.DurationVar(&o.interval, "interval", 30*time.Second, "how often the leader reconciles address blocks")
	flag.DurationVar(&o.grace, "grace", time.Minute, "age an allocation must reach before it counts as leaked")
	flag.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
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

func run(ctx context.Context, o options, log *slog.Logger) error {
	var rc *rest.Config
	var err error
	if o.kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return fmt.Errorf("kubernetes client configuration: %w", err)
	}
	rc.UserAgent = "loom-controller"
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	identity, err := os.Hostname()
	if err != nil {
		return err
	}
	identity = fmt.Sprintf("%s_%d", identity, os.Getpid())

	if o.healthAddress != "" {
		srv := &http.Server{Addr: o.healthAddress, Handler: healthz(), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("health server", "error", err)
			}
		}()
		defer srv.Close()
	}

	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: o.leaseNamespace, Name: o.leaseName},
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	rec := newReclaimer(kube, dyn, o.interval, o.grace, log)
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
				rec.run(ctx)
			},
			OnStoppedLeading: func() { log.Info("no longer leading", "identity", identity) },
		},
	})
	return nil
}

func healthz() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	return mux
}
