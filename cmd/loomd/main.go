//go:debug multipathtcp=0

// Command loomd is Loom's node agent: it serves the loom CNI binary's calls from informer
// caches, attaches pods to their networks through the delegate orchestrator, keeps the node's
// attachment ledger, and writes the CNI configuration once it is ready.
//
// This is the only place that wires components together and the only one allowed to exit.
//
// Multipath TCP is off (the go:debug line above): Go listens with it by default where the
// kernel has it, and such sockets refuse the TCP MD5 keys that BGP sessions with a password
// need.
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

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadclient "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/client/clientset/versioned"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/loom-cni/loom/cniserver"
	"github.com/loom-cni/loom/daemon"
	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/delegate/exec"
	"github.com/loom-cni/loom/delegate/npwg"
	"github.com/loom-cni/loom/fabric"
	"github.com/loom-cni/loom/fabric/ipam"
	"github.com/loom-cni/loom/metrics"
	"github.com/loom-cni/loom/sriov/attach"
	"github.com/loom-cni/loom/sriov/podresources"
)

func main() {
	configPath := flag.String("config", "/etc/loom/loomd.yaml", "configuration file")
	flag.Parse()
	cfg, err := daemon.LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loomd:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level(cfg.LogLevel)})).With("node", cfg.NodeName)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("loomd stopped", "error", err)
		os.Exit(1)
	}
}

func level(s string) slog.Level {
	var l slog.Level
	_ = l.UnmarshalText([]byte(s))
	return l
}

const (
	// shutdownTimeout lets in-flight CNI calls finish when loomd is told to stop.
	shutdownTimeout = 30 * time.Second
	// annotateWorkers write network-status annotations in parallel.
	annotateWorkers = 4
	// apiQPS and apiBurst let a node start many pods at once without queueing their
	// annotations behind client-go's default limit of 5 requests a second.
	apiQPS, apiBurst = 50, 100
)

func run(ctx context.Context, cfg daemon.Config, log *slog.Logger) error {
	restCfg, err := restConfig(cfg)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	nads, err := nadclient.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("network-attachment-definition client: %w", err)
	}

	ledger, err := delegate.OpenLedger(cfg.LedgerDir, log)
	if err != nil {
		return err
	}
	unlock, err := ledger.Lock(30 * time.Second)
	if err != nil {
		return fmt.Errorf("another loomd or loom process holds the ledger: %w", err)
	}
	defer unlock()

	dyn, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	alloc := ipam.NewAllocator(ipam.NewKubeStore(dyn), cfg.NodeName, log, time.Now)
	vfAtt := vfAttachment(cfg, log)
	kinds := map[string]delegate.Attachment{
		delegate.KindCNI: exec.New([]string{cfg.CNIBinDir}, cfg.CNICacheDir, nil),
		attach.Kind:      vfAtt,
	}
	var primary *fabric.Network
	var settings fabric.Settings
	if cfg.PrimaryNetwork != nil {
		var verr error
		if settings, verr = cfg.PrimaryNetwork.Validate(); verr != nil {
			return verr
		}
		// The VXLAN guard table is written with the same nft as the policy rules.
		settings.Nft = cfg.Policy.Nft
		primary = fabric.NewNetwork(settings, cfg.NodeName, kube, dyn, alloc, log)
		kinds[fabric.Kind] = primary.Attachment()
	}
	reg := metrics.NewRegistry()
	cniMetrics := metrics.NewCNI(reg)
	orch := delegate.NewOrchestrator(ledger, kinds, log)
	orch.SetObserver(cniMetrics)
	cluster := daemon.NewCluster(kube, nads, cfg.NodeName, cfg.PodWait.Duration, log)
	resolver, err := npwg.NewResolver(npwg.Config{
		NADs:               cluster,
		ConfDir:            os.DirFS(cfg.NetConfDir),
		DefaultNetwork:     cfg.DefaultNetwork,
		SystemNamespace:    cfg.SystemNamespace,
		NamespaceIsolation: cfg.NamespaceIsolation,
		GlobalNamespaces:   cfg.GlobalNamespaces,
		InProcess:          []string{fabric.Kind, attach.Kind},
		Builtin:            builtinNetworks(primary),
	})
	if err != nil {
		return err
	}
	annotator := daemon.NewAnnotator(kube, nadv1.NetworkStatusAnnot, log)
	svc := daemon.NewService(cluster, resolver, orch, annotator, log)
	// Asked-for addresses and MACs are checked against this node's ledger, and against every
	// pod's network-status once the policy engine's source is given (SetClusterPods).
	addresses := daemon.NewAddressGate(cluster, resolver, daemon.DefaultRouteLink)
	orch.SetGate(addresses)
	svc.SetAddressGate(addresses)
	devices := podresources.New(cfg.SRIOV.PodResourcesSocket)
	defer devices.Close()
	svc.SetDevices(kubeletDevices{devices})
	errc := make(chan error, 4)
	vfs := startDevicePlugins(ctx, cfg.SRIOV, log, errc)
	go cluster.Run(ctx)
	go annotator.Run(ctx, annotateWorkers)
	var pol *policyState
	if cfg.PolicyEnabled() {
		pol = startPolicy(ctx, cfg, settings, primary, kube, dyn, nads, cluster, svc, log)
	}
	fab := &fabricState{}
	go reconcileAddresses(ctx, alloc, orch, fab, log)
	registerCollectors(reg, ledger, alloc, primary, settings, pol, vfs, vfAtt)

	listener, err := cniserver.Listen(cfg.Socket)
	if err != nil {
		return err
	}
	cniSrv := cniserver.NewServer(cniserver.Mux{
		"":                   cniMetrics.Handler(svc),
		cniserver.PluginIPAM: daemon.NewIPAMService(alloc, fab.loadedErr, log),
	})
	healthSrv := &http.Server{Addr: cfg.HealthAddress, Handler: health(svc, metrics.Handler(reg, log)), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if ferr := startFabric(ctx, alloc, primary, fab, log); ferr != nil {
			errc <- ferr
		}
	}()
	go func() { errc <- cniSrv.Serve(listener) }()
	go func() { errc <- serve("health server", healthSrv.ListenAndServe()) }()
	go becomeReady(ctx, cfg, func() error { return readiness(cluster, resolver, fab, pol, vfs) }, svc, log)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	cniSrv.Shutdown(shutdownCtx)
	healthSrv.Shutdown(shutdownCtx)
	return err
}

func serve(what string, err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

func restConfig(cfg daemon.Config) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if cfg.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	rc.UserAgent = "loomd/" + cfg.NodeName
	rc.QPS, rc.Burst = apiQPS, apiBurst
	return rc, nil
}

// becomeReady waits for the caches and the default network, then marks the service ready and
// writes the CNI configuration, the runtime's signal that this node can start pods.
func becomeReady(ctx context.Context, cfg daemon.Config, readiness func() error, svc *daemon.Service, log *slog.Logger) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var lastErr string
	for {
		err := readiness()
		if err == nil {
			if err = daemon.WriteCNIConfig(cfg); err == nil {
				svc.SetReady(true)
				if err = svc.ResyncStatus(); err != nil {
					log.Warn("resync network-status from the ledger", "error", err)
				}
				log.Info("ready", "cniConfig", cfg.CNIConfDir+"/"+cfg.CNIConfName, "socket", cfg.Socket)
				return
			}
		}
		if err.Error() != lastErr {
			log.Info("not ready yet", "reason", err)
			lastErr = err.Error()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func readiness(cluster *daemon.Cluster, resolver *npwg.Resolver, fab *fabricState, pol *policyState, vfs *sriovState) error {
	if !cluster.Synced() {
		return errors.New("waiting for the pod and network caches to fill")
	}
	if err := fab.err(); err != nil {
		return err
	}
	if err := pol.err(); err != nil {
		return err
	}
	if err := vfs.err(); err != nil {
		return err
	}
	if _, err := resolver.DefaultNetwork(); err != nil {
		return fmt.Errorf("default network: %w", err)
	}
	return nil
}

// health serves /healthz, /readyz and, with metricsHandler, the metrics.
func health(svc *daemon.Service, metricsHandler http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+metrics.Path, metricsHandler)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !svc.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}
