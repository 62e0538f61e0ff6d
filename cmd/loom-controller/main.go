// Command loom-controller runs Loom's cluster-wide controller, package controller: the
// leader's address-block and Tenant-status loops and, on every replica, the admission
// webhook. This is flags to its Options, and the only place allowed to exit.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/loom-cni/loom/controller"
)

func main() {
	var lvlText string
	var o controller.Options
	flag.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty means in-cluster configuration")
	flag.StringVar(&o.HealthAddress, "health-address", ":9466", "address of /healthz and /metrics; empty disables them")
	flag.StringVar(&o.LeaseNamespace, "lease-namespace", "kube-system", "namespace of the leader election Lease")
	flag.StringVar(&o.LeaseName, "lease-name", "loom-controller", "name of the leader election Lease")
	flag.DurationVar(&o.Interval, "interval", 30*time.Second, "how often the leader reconciles address blocks")
	flag.DurationVar(&o.Grace, "grace", time.Minute, "age an allocation must reach before it counts as leaked")
	flag.StringVar(&lvlText, "log-level", "info", "debug, info, warn or error")
	flag.StringVar(&o.WebhookAddress, "webhook-address", ":9443", "address the admission webhook serves on (TLS); empty disables the webhook")
	flag.StringVar(&o.WebhookURL, "webhook-url", "", "https URL the API server calls the webhook at; empty means through --webhook-service")
	flag.StringVar(&o.WebhookService, "webhook-service", "kube-system/loom-controller", "namespace/name of the Service (port 443) the API server calls the webhook through")
	flag.StringVar(&o.WebhookSecret, "webhook-secret", "kube-system/loom-webhook-tls", "namespace/name of the Secret holding the webhook's CA and serving certificate")
	flag.StringVar(&o.WebhookConfigName, "webhook-config-name", "loom", "name of the ValidatingWebhookConfiguration")
	flag.Parse()

	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(lvlText)); err != nil {
		fmt.Fprintln(os.Stderr, "loom-controller: --log-level:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := controller.Run(ctx, o, log); err != nil {
		log.Error("loom-controller stopped", "error", err)
		os.Exit(1)
	}
}
