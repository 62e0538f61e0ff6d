package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ktypes "k8s.io/apimachinery/pkg/types"

	"github.com/loom-cni/loom/cniserver"
	"github.com/loom-cni/loom/delegate"
	"github.com/loom-cni/loom/delegate/npwg"
	"github.com/loom-cni/loom/policy"
)

// Service answers the loom binary's CNI calls.
type Service struct {
	cluster   *Cluster
	resolver  *npwg.Resolver
	orch      *delegate.Orchestrator
	annotator *Annotator
	log       *slog.Logger
	ready     atomic.Bool
	tenancy   *Tenancy     // nil: no tenancy checks
	enforcer  Enforcer     // nil: no policy engine
	devices   DeviceLister // nil: no kubelet to ask for devices
	addresses *AddressGate // nil: asked-for addresses are not checked
}

var _ cniserver.Handler = (*Service)(nil)

// NewService wires the pieces of the CNI service together.
func NewService(cluster *Cluster, resolver *npwg.Resolver, orch *delegate.Orchestrator, annotator *Annotator, log *slog.Logger) *Service {
	return &Service{cluster: cluster, resolver: resolver, orch: orch, annotator: annotator, log: log}
}

// SetPolicy makes ADD check the pod's tenancy before it attaches anything, and put the pod's
// rules in place before it returns.
func (s *Service) SetPolicy(t *Tenancy, e Enforcer) {
	s.tenancy, s.enforcer = t, e
}

// SetAddressGate names the orchestrator's gate for asked-for addresses, which
// SetClusterPods feeds.
func (s *Service) SetAddressGate(g *AddressGate) { s.addresses = g }

// SetClusterPods gives the address gate, if any, every pod of the cluster with its
// attachments (the policy engine's source), so that a pod's "ips" and "mac" are checked
// against other nodes' pods too, not only against this node's ledger.
func (s *Service) SetClusterPods(p ClusterPods) {
	if s.addresses != nil {
		s.addresses.SetClusterPods(p)
	}
}

// SetReady marks the service ready (or not) to serve ADDs; STATUS reports it.
func (s *Service) SetReady(ready bool) { s.ready.Store(ready) }

// podArgs are the Kubernetes arguments container runtimes pass in CNI_ARGS.
type podArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE          types.UnmarshallableString //nolint:revive // CNI_ARGS key
	K8S_POD_NAME               types.UnmarshallableString //nolint:revive
	K8S_POD_INFRA_CONTAINER_ID types.UnmarshallableString //nolint:revive
	K8S_POD_UID                types.UnmarshallableString //nolint:revive
}

// callConf is what loomd reads of the runtime's stdin configuration.
type callConf struct {
	CNIVersion    string         `json:"cniVersion"`
	RuntimeConfig map[string]any `json:"runtimeConfig,omitempty"`
}

// ServeCNI dispatches one CNI call.
func (s *Service) ServeCNI(ctx context.Context, req *cniserver.Request) ([]byte, error) {
	start := time.Now()
	pa, argsErr := parsePodArgs(req.Args)
	out, err := s.serve(ctx, req, pa, argsErr)
	attrs := []any{"command", req.Command, "containerID", req.ContainerID, "ifname", req.Ifname, "duration", time.Since(start).Round(time.Microsecond)}
	if pa.K8S_POD_NAME != "" {
		attrs = append(attrs, "namespace", string(pa.K8S_POD_NAMESPACE), "pod", string(pa.K8S_POD_NAME))
	}
	if err != nil {
		s.log.Warn("cni call failed", append(attrs, "error", err)...)
	} else {
		s.log.Info("cni call", attrs...)
	}
	return out, err
}

// serve runs one call. pa holds the pod arguments of CNI_ARGS; argsErr says why they could not
// be read, which only ADD cannot do without.
func (s *Service) serve(ctx context.Context, req *cniserver.Request, pa podArgs, argsErr error) ([]byte, error) {
	switch req.Command {
	case "ADD":
		if argsErr != nil {
			return nil, types.NewError(types.ErrInvalidEnvironmentVariables, argsErr.Error(), "")
		}
		return s.add(ctx, req, pa)
	case "DEL":
		return nil, s.del(ctx, req, pa)
	case "CHECK":
		if err := s.orch.Check(ctx, delegate.ContainerID(req.ContainerID), req.Netns); err != nil {
			return nil, types.NewError(types.ErrInternal, err.Error(), "")
		}
		return nil, nil
	case "GC":
		return nil, s.gc(ctx, req)
	case "STATUS":
		return nil, s.status(ctx)
	}
	return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("unknown CNI command %q", req.Command), "")
}

func parsePodArgs(args string) (podArgs, error) {
	var pa podArgs
	if err := types.LoadArgs(args, &pa); err != nil {
		return pa, fmt.Errorf("parse CNI_ARGS: %w", err)
	}
	return pa, nil
}

func (s *Service) add(ctx context.Context, req *cniserver.Request, pa podArgs) ([]byte, error) {
	if pa.K8S_POD_NAMESPACE == "" || pa.K8S_POD_NAME == "" {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			"CNI_ARGS lacks K8S_POD_NAMESPACE and K8S_POD_NAME: loom serves Kubernetes pods, whose runtime sets them", "")
	}
	var conf callConf
	if err := json.Unmarshal(req.Config, &conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "parse network configuration", err.Error())
	}
	pod, err := s.cluster.Pod(ctx, string(pa.K8S_POD_NAMESPACE), string(pa.K8S_POD_NAME), ktypes.UID(pa.K8S_POD_UID))
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, err.Error(), "")
	}
	specs, err := s.resolver.Resolve(pod, req.Ifname, conf.RuntimeConfig)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	if s.tenancy != nil {
		if err = s.tenancy.Check(pod, specs); err != nil {
			return nil, tenancyError(err)
		}
	}
	if specs, err = s.withDevices(ctx, pod, specs); err != nil {
		return nil, err
	}
	ref := delegate.PodRef{Namespace: pod.Namespace, Name: pod.Name, UID: delegate.PodUID(pod.UID)}
	id := delegate.ContainerID(req.ContainerID)
	// What must still succeed once the pod is attached, or its networks are taken back:
	// a result the runtime can read, then the pod's rules in place (a pod whose rules are
	// not must not run).
	var res types.Result
	convert := func(_ context.Context, outcomes []delegate.Outcome) error {
		var cerr error
		if res, cerr = outcomes[0].Result.GetAsVersion(conf.CNIVersion); cerr != nil {
			return &resultVersionError{version: conf.CNIVersion, err: cerr}
		}
		return nil
	}
	admit := func(ctx context.Context, outcomes []delegate.Outcome) error {
		if s.enforcer == nil {
			return nil
		}
		aerr := s.enforcer.Admit(ctx, localPod(pod, id, req.Netns, outcomes))
		if aerr == nil {
			return nil
		}
		if rerr := s.enforcer.Release(ctx, req.ContainerID); rerr != nil {
			s.log.Error("forget the rules of a pod that failed", "namespace", pod.Namespace, "pod", pod.Name, "error", rerr)
		}
		return fmt.Errorf("write the pod's rules: %w", aerr)
	}
	outcomes, err := s.orch.Add(ctx, ref, id, req.Netns, specs, convert, admit)
	if err != nil {
		return nil, addError(ref, err)
	}
	if err = s.writeStatus(PodKey{pod.Namespace, pod.Name, pod.UID}, outcomes); err != nil {
		// The pod is attached; a status we cannot build is worth a log line, not a failure.
		s.log.Error("build network-status", "namespace", pod.Namespace, "pod", pod.Name, "error", err)
	}
	return json.Marshal(res)
}

// resultVersionError says the default network's result cannot be given in the CNI version
// the runtime speaks.
type resultVersionError struct {
	version string
	err     error
}

func (e *resultVersionError) Error() string {
	return fmt.Sprintf("convert the default network's result to CNI %s: %v", e.version, e.err)
}

func (e *resultVersionError) Unwrap() error { return e.err }

// addError is the CNI error of a failed orchestrator ADD. An address or MAC the pod asked
// for that another interface has is the pod's mistake, which trying again does not mend; a
// delegate's own CNI error keeps its code (loom-ipam refusing a taken address says 7, an
// unreachable API server 11); anything else is an internal error.
func addError(pod delegate.PodRef, err error) error {
	code := uint(types.ErrInternal)
	var taken *npwg.TakenError
	var cniErr *types.Error
	var version *resultVersionError
	switch {
	case errors.As(err, &taken):
		code = types.ErrInvalidNetworkConfig
	case errors.As(err, &version):
		code = types.ErrIncompatibleCNIVersion
	case errors.As(err, &cniErr) && cniErr.Code != 0:
		code = cniErr.Code
	}
	msg := err.Error()
	if !errors.As(err, new(*npwg.Error)) { // which names the pod itself
		msg = fmt.Sprintf("pod %s: %s", pod, msg)
	}
	return &addFailure{err: err, cni: types.NewError(code, msg, "")}
}

// addFailure is a failed ADD: the runtime gets the CNI error (the CNI server finds it with
// errors.As), callers the cause.
type addFailure struct {
	err error
	cni *types.Error
}

func (e *addFailure) Error() string   { return e.cni.Error() }
func (e *addFailure) Unwrap() []error { return []error{e.cni, e.err} }

// writeStatus queues the pod's network-status; the Annotator writes it.
func (s *Service) writeStatus(pod PodKey, outcomes []delegate.Outcome) error {
	statuses, err := npwg.NetworkStatus(outcomes)
	if err != nil {
		return err
	}
	value, err := npwg.StatusAnnotation(statuses)
	if err != nil {
		return err
	}
	s.annotator.Set(pod, value)
	return nil
}

// ResyncStatus writes network-status again for every attached pod whose annotation differs
// from what the ledger says: a loomd that stopped between an ADD and its annotation, or a
// user who edited it, is caught up at start.
func (s *Service) ResyncStatus() error {
	recs, err := s.orch.Records()
	if err != nil {
		return err
	}
	for _, rec := range recs {
		pod := s.cluster.CachedPod(rec.Pod.Namespace, rec.Pod.Name, ktypes.UID(rec.Pod.UID))
		if pod == nil {
			continue
		}
		outcomes, err := rec.Outcomes()
		if err != nil || len(outcomes) == 0 || len(outcomes) != len(rec.Attachments) {
			continue
		}
		statuses, err := npwg.NetworkStatus(outcomes)
		if err != nil {
			continue
		}
		value, err := npwg.StatusAnnotation(statuses)
		if err == nil && pod.Annotations[nadv1.NetworkStatusAnnot] != value {
			s.annotator.Set(PodKey{pod.Namespace, pod.Name, pod.UID}, value)
		}
	}
	return nil
}

// del releases a container from the ledger. It never asks the API server: when the ledger has
// no record, it resolves the pod's networks from the cache if the pod is there, else the
// default network alone, and releases those (DEL of something never attached is harmless).
func (s *Service) del(ctx context.Context, req *cniserver.Request, pa podArgs) error {
	fallback := func() ([]delegate.Spec, delegate.PodRef) {
		pod := s.cluster.CachedPod(string(pa.K8S_POD_NAMESPACE), string(pa.K8S_POD_NAME), ktypes.UID(pa.K8S_POD_UID))
		if pod == nil {
			pod = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
				Namespace: string(pa.K8S_POD_NAMESPACE), Name: string(pa.K8S_POD_NAME), UID: ktypes.UID(pa.K8S_POD_UID),
			}}
		}
		ref := delegate.PodRef{Namespace: pod.Namespace, Name: pod.Name, UID: delegate.PodUID(pod.UID)}
		specs, err := s.resolver.Resolve(pod, req.Ifname, nil)
		if err != nil {
			s.log.Warn("no ledger record and the pod's networks do not resolve: releasing nothing", "containerID", req.ContainerID, "error", err)
			return nil, ref
		}
		return specs, ref
	}
	if s.enforcer != nil {
		// The rules go first: the pod's addresses leave the sets before its IPAM can hand
		// them to another pod. A failure is logged and left to the engine's next sync, never
		// a failed DEL.
		if err := s.enforcer.Release(ctx, req.ContainerID); err != nil {
			s.log.Warn("remove a deleted pod's rules", "containerID", req.ContainerID, "error", err)
		}
	}
	if err := s.orch.Del(ctx, delegate.ContainerID(req.ContainerID), req.Netns, fallback); err != nil {
		return types.NewError(types.ErrInternal, err.Error(), "")
	}
	return nil
}

// RestorePolicy gives the policy engine every pod of the attachment ledger: after a restart,
// and after GC released containers.
func (s *Service) RestorePolicy(ctx context.Context) error {
	if s.enforcer == nil {
		return nil
	}
	recs, err := s.orch.Records()
	if err != nil {
		return err
	}
	var pods []policy.LocalPod
	for _, rec := range recs {
		p, err := recordPod(rec, s.cluster.CachedPod(rec.Pod.Namespace, rec.Pod.Name, ktypes.UID(rec.Pod.UID)))
		if err != nil {
			s.log.Warn("a ledger record without readable results gets no rules", "containerID", rec.ContainerID, "error", err)
			continue
		}
		pods = append(pods, p)
	}
	return s.enforcer.Restore(ctx, pods)
}

// gc releases containers the runtime no longer lists and forwards GC to every delegate
// network loomd knows: the default network and every NetworkAttachmentDefinition.
func (s *Service) gc(ctx context.Context, req *cniserver.Request) error {
	valid, err := delegate.ValidContainers(req.Config)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	known, err := s.knownNetworks()
	if err != nil {
		s.log.Warn("gc: some networks could not be resolved; collecting the rest", "error", err)
	}
	if err := s.orch.GC(ctx, valid, known); err != nil {
		return types.NewError(types.ErrInternal, err.Error(), "")
	}
	if err := s.RestorePolicy(ctx); err != nil {
		s.log.Warn("gc: drop the rules of collected pods", "error", err)
	}
	return nil
}

func (s *Service) knownNetworks() ([]delegate.Spec, error) {
	var errs []error
	var known []delegate.Spec
	if d, err := s.resolver.DefaultNetwork(); err != nil {
		errs = append(errs, err)
	} else {
		known = append(known, d)
	}
	nads, err := s.cluster.NADs()
	if err != nil {
		return known, errors.Join(append(errs, err)...)
	}
	for _, nad := range nads {
		spec, err := s.resolver.NetworkSpec(nad)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		known = append(known, spec)
	}
	return known, errors.Join(errs...)
}

// status answers STATUS: ready once the caches are filled and the default network resolves
// and reports itself ready.
func (s *Service) status(ctx context.Context) error {
	if !s.ready.Load() {
		return types.NewError(cniserver.ErrPluginNotAvailable, "loomd is starting: caches not synced yet", "")
	}
	d, err := s.resolver.DefaultNetwork()
	if err != nil {
		return types.NewError(cniserver.ErrPluginNotAvailable, "the default network does not resolve", err.Error())
	}
	if err := s.orch.Status(ctx, d); err != nil {
		return types.NewError(cniserver.ErrPluginNotAvailable, "the default network is not ready", err.Error())
	}
	return nil
}

// Ready reports whether SetReady(true) was called.
func (s *Service) Ready() bool { return s.ready.Load() }
