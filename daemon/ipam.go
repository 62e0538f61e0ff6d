package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/loom-cni/loom/cniserver"
	"github.com/loom-cni/loom/fabric/ipam"
)

// IPAMAllocator is what the IPAM service needs of the node's allocator.
type IPAMAllocator interface {
	Allocate(ctx context.Context, pool ipam.Pool, owner ipam.Owner) (netip.Addr, netip.Prefix, error)
	// AllocateAddr allocates the address the pod asked for, or refuses it (ipam.ErrAddressTaken,
	// ipam.ErrNotInPool, ipam.ErrOtherNodesBlock, ipam.ErrIPv6Unsupported) allocating nothing.
	AllocateAddr(ctx context.Context, pool ipam.Pool, owner ipam.Owner, addr netip.Addr) (netip.Addr, netip.Prefix, error)
	Release(ctx context.Context, containerID, ifname string) error
	Lookup(containerID, ifname string) []netip.Addr
}

// IPAMService answers Loom's IPAM plugin (loom-ipam), which secondary networks name in their
// "ipam" section: cluster-wide address pools carved into per-node blocks, like the primary
// network's.
type IPAMService struct {
	alloc IPAMAllocator
	ready func() error
	log   *slog.Logger
}

var _ cniserver.Handler = (*IPAMService)(nil)

// NewIPAMService returns the IPAM plugin's service backed by the node's allocator. ready
// reports whether the allocator has loaded the node's blocks; ADD and CHECK wait for it.
func NewIPAMService(alloc IPAMAllocator, ready func() error, log *slog.Logger) *IPAMService {
	return &IPAMService{alloc: alloc, ready: ready, log: log}
}

// ServeCNI serves one IPAM call.
func (s *IPAMService) ServeCNI(ctx context.Context, req *cniserver.Request) ([]byte, error) {
	out, err := s.serve(ctx, req)
	attrs := []any{"plugin", req.Plugin, "command", req.Command, "containerID", req.ContainerID, "ifname", req.Ifname}
	if err != nil {
		s.log.Warn("ipam call failed", append(attrs, "error", err)...)
	} else {
		s.log.Debug("ipam call", attrs...)
	}
	return out, err
}

func (s *IPAMService) serve(ctx context.Context, req *cniserver.Request) ([]byte, error) {
	switch req.Command {
	case "DEL":
		if err := s.alloc.Release(ctx, req.ContainerID, req.Ifname); err != nil {
			// The node's reconciliation releases it once the ledger no longer names the container.
			s.log.Warn("address not released yet; reconciliation will release it", "containerID", req.ContainerID, "ifname", req.Ifname, "error", err)
		}
		return nil, nil
	case "GC":
		return nil, nil
	}
	if err := s.ready(); err != nil {
		code := uint(types.ErrTryAgainLater)
		if req.Command == "STATUS" {
			code = cniserver.ErrPluginNotAvailable
		}
		return nil, types.NewError(code, "loomd's IPAM is not ready", err.Error())
	}
	if req.Command == "STATUS" {
		return nil, nil
	}
	conf, err := ipam.ParseIPAMConfig(req.Config)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "loom-ipam configuration", err.Error())
	}
	switch req.Command {
	case "ADD":
		return s.add(ctx, req, conf)
	case "CHECK":
		if len(s.alloc.Lookup(req.ContainerID, req.Ifname)) == 0 {
			return nil, types.NewError(types.ErrInternal, fmt.Sprintf("no address of pool %s is allocated to container %s interface %s", conf.Pool().Name, req.ContainerID, req.Ifname), "")
		}
		return nil, nil
	}
	return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("unknown CNI command %q", req.Command), "")
}

func (s *IPAMService) add(ctx context.Context, req *cniserver.Request, conf ipam.IPAMConfig) ([]byte, error) {
	pa, err := parsePodArgs(req.Args)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	pod := string(pa.K8S_POD_NAMESPACE) + "/" + string(pa.K8S_POD_NAME)
	owner := ipam.Owner{Kind: ipam.OwnerPod, Namespace: string(pa.K8S_POD_NAMESPACE), Name: string(pa.K8S_POD_NAME),
		UID: string(pa.K8S_POD_UID), ContainerID: req.ContainerID, Ifname: req.Ifname}
	var in ipamStdin
	if err = json.Unmarshal(req.Config, &in); err != nil {
		// ParseIPAMConfig read the same bytes, so only "ips" of the wrong shape gets here.
		return nil, &AllocError{Pod: pod, Network: conf.Network, Err: fmt.Errorf("read runtimeConfig.ips and args.cni.ips, lists of addresses: %w: %w", err, errAskedAddresses)}
	}
	want, err := in.requested(conf)
	if err != nil {
		return nil, &AllocError{Pod: pod, Network: conf.Network, Err: err}
	}
	var addr netip.Addr
	if want.IsValid() {
		addr, _, err = s.alloc.AllocateAddr(ctx, conf.Pool(), owner, want)
	} else {
		addr, _, err = s.alloc.Allocate(ctx, conf.Pool(), owner)
	}
	if err != nil {
		return nil, &AllocError{Pod: pod, Network: conf.Network, Asked: want, Err: err}
	}
	res, err := conf.Result(addr).GetAsVersion(in.CNIVersion)
	if err != nil {
		return nil, types.NewError(types.ErrIncompatibleCNIVersion, "convert the result", err.Error())
	}
	return json.Marshal(res)
}

// ipamStdin is what loom-ipam reads of its stdin besides the ipam section: the version and
// the addresses the pod asked for, as CNI conventions pass them to IPAM plugins
// (runtimeConfig "ips" from the networks annotation, or args.cni.ips from its cni-args).
type ipamStdin struct {
	CNIVersion    string `json:"cniVersion"`
	RuntimeConfig struct {
		IPs []string `json:"ips"`
	} `json:"runtimeConfig"`
	Args struct {
		CNI struct {
			IPs []string `json:"ips"`
		} `json:"cni"`
	} `json:"args"`
}

// errAskedAddresses is wrapped by the error for asked-for addresses loom-ipam cannot give
// as asked: unreadable, or more than one per interface.
var errAskedAddresses = errors.New(`unusable "ips"`)

// requested returns the address the pod asks for, invalid when it asks for none. An
// address may carry a prefix length, as "ips" entries do; loom-ipam gives the range's.
// loom-ipam gives an interface one address, so asking for several is refused rather than
// answered with one of them.
func (in ipamStdin) requested(conf ipam.IPAMConfig) (netip.Addr, error) {
	var out []netip.Addr
	for _, s := range append(in.RuntimeConfig.IPs, in.Args.CNI.IPs...) {
		s = strings.TrimSpace(s)
		addr, err := netip.ParseAddr(s)
		if p, perr := netip.ParsePrefix(s); perr == nil {
			addr, err = p.Addr(), nil
		}
		if err != nil || addr.Zone() != "" {
			return netip.Addr{}, fmt.Errorf(`"ips" entry %q is not an address: write an address of range %s, with or without "/%d": %w`,
				s, conf.Range, conf.Range.Bits(), errAskedAddresses)
		}
		if !slices.Contains(out, addr.Unmap()) {
			out = append(out, addr.Unmap())
		}
	}
	switch len(out) {
	case 0:
		return netip.Addr{}, nil
	case 1:
		return out[0], nil
	}
	return netip.Addr{}, fmt.Errorf(`"ips" asks for %d addresses (%v), but loom-ipam range %s gives an interface one: ask for one: %w`,
		len(out), out, conf.Range, errAskedAddresses)
}

// AllocError is loom-ipam's failure to allocate a pod's address on a network. The runtime gets
// it as a CNI error (the CNI server finds Unwrap's *types.Error): code ErrInvalidNetworkConfig
// for the pod's own mistake, which trying again cannot mend (an address taken, outside the
// pool, of another node's block, of a family the pool lacks, an unusable "ips"), and
// ErrTryAgainLater for anything else, such as an unreachable API server.
type AllocError struct {
	Pod     string     // namespace/name
	Network string     // the network's name, as its configuration gives it
	Asked   netip.Addr // the address the pod asked for; invalid when it asked for none
	Err     error
}

func (e *AllocError) Error() string {
	if e.Asked.IsValid() {
		return fmt.Sprintf("pod %s network %s: allocate the address it asked for (\"ips\" %s): %v", e.Pod, e.Network, e.Asked, e.Err)
	}
	if errors.Is(e.Err, errAskedAddresses) {
		return fmt.Sprintf("pod %s network %s: read the addresses it asked for: %v", e.Pod, e.Network, e.Err)
	}
	return fmt.Sprintf("pod %s network %s: allocate an address: %v", e.Pod, e.Network, e.Err)
}

// Code is the CNI error code the runtime gets.
func (e *AllocError) Code() uint {
	for _, final := range []error{ipam.ErrAddressTaken, ipam.ErrNotInPool, ipam.ErrOtherNodesBlock, ipam.ErrIPv6Unsupported, errAskedAddresses} {
		if errors.Is(e.Err, final) {
			return types.ErrInvalidNetworkConfig
		}
	}
	return types.ErrTryAgainLater
}

// Unwrap gives the cause and the CNI error the runtime gets.
func (e *AllocError) Unwrap() []error {
	return []error{e.Err, types.NewError(e.Code(), e.Error(), "")}
}
