package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/loom-cni/loom/cniserver"
	"github.com/loom-cni/loom/fabric/ipam"
)

// IPAMAllocator is what the IPAM service needs of the node's allocator.
type IPAMAllocator interface {
	Allocate(ctx context.Context, pool ipam.Pool, owner ipam.Owner) (netip.Addr, netip.Prefix, error)
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
	owner := ipam.Owner{Kind: ipam.OwnerPod, Namespace: string(pa.K8S_POD_NAMESPACE), Name: string(pa.K8S_POD_NAME),
		UID: string(pa.K8S_POD_UID), ContainerID: req.ContainerID, Ifname: req.Ifname}
	addr, _, err := s.alloc.Allocate(ctx, conf.Pool(), owner)
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, "allocate an address", err.Error())
	}
	var version struct {
		CNIVersion string `json:"cniVersion"`
	}
	_ = json.Unmarshal(req.Config, &version)
	res, err := conf.Result(addr).GetAsVersion(version.CNIVersion)
	if err != nil {
		return nil, types.NewError(types.ErrIncompatibleCNIVersion, "convert the result", err.Error())
	}
	return json.Marshal(res)
}
