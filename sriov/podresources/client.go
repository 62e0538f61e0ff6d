package podresources

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	podresourcesapi "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// DefaultSocket is the kubelet's PodResources API socket.
const DefaultSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"

const (
	// callTimeout bounds each call to the kubelet.
	callTimeout = 10 * time.Second
	// maxMessageSize is the largest answer accepted: the kubelet's own client allows 16 MiB,
	// which a List of a large node's pods can come near.
	maxMessageSize = 16 << 20
)

// ErrPodNotFound is Devices' error when the kubelet does not know the pod.
var ErrPodNotFound = errors.New("the kubelet does not know the pod")

// Client asks the kubelet which devices it allocated to pods. It is safe for concurrent use.
type Client struct {
	socket string

	mu     sync.Mutex
	conn   *grpc.ClientConn
	lister podresourcesapi.PodResourcesListerClient

	noGet atomic.Bool // the kubelet cannot answer Get
}

// New returns a client of the kubelet's PodResources API at socket (DefaultSocket when
// empty). It connects on first use.
func New(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	return &Client{socket: socket}
}

// Devices returns the device IDs the kubelet allocated to the pod namespace/name, by
// resource name, over all its containers; each resource's IDs are sorted. A pod without
// devices gets an empty map. A pod the kubelet does not know is an error wrapping
// ErrPodNotFound.
func (c *Client) Devices(ctx context.Context, namespace, name string) (map[string][]string, error) {
	pod, err := c.pod(ctx, namespace, name)
	if status.Code(err) == codes.Unavailable {
		// The first call on a connection the kubelet closed when it restarted fails; the
		// second reconnects.
		pod, err = c.pod(ctx, namespace, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read the devices of pod %s/%s from the kubelet at %s: %w", namespace, name, c.socket, err)
	}
	return devices(pod), nil
}

// Close closes the connection, if one was made. The client can be used again after.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn, c.lister = nil, nil
	return err
}

// pod finds the pod with Get, or with List where the kubelet cannot answer Get.
func (c *Client) pod(ctx context.Context, namespace, name string) (*podresourcesapi.PodResources, error) {
	lister, err := c.client()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if !c.noGet.Load() {
		resp, getErr := lister.Get(ctx, &podresourcesapi.GetPodResourcesRequest{PodNamespace: namespace, PodName: name})
		switch status.Code(getErr) {
		case codes.OK:
			return resp.GetPodResources(), nil
		case codes.Unimplemented:
			c.noGet.Store(true)
		case codes.Unknown:
			// The kubelet's Get fails with Unknown both while its feature gate is off and for a
			// pod it does not know: List tells the two apart.
			pod, listErr := list(ctx, lister, namespace, name)
			if listErr == nil {
				c.noGet.Store(true)
			}
			return pod, listErr
		default:
			return nil, fmt.Errorf("get: %w", getErr)
		}
	}
	return list(ctx, lister, namespace, name)
}

// list finds the pod in the kubelet's List. Should the kubelet list two pods of the same name
// (one still terminating), the first is taken.
func list(ctx context.Context, lister podresourcesapi.PodResourcesListerClient, namespace, name string) (*podresourcesapi.PodResources, error) {
	resp, err := lister.List(ctx, &podresourcesapi.ListPodResourcesRequest{})
	if err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	for _, pod := range resp.PodResources {
		if pod.Namespace == namespace && pod.Name == name {
			return pod, nil
		}
	}
	return nil, ErrPodNotFound
}

// client returns the connection's client, connecting on first use.
func (c *Client) client() (podresourcesapi.PodResourcesListerClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lister != nil {
		return c.lister, nil
	}
	conn, err := grpc.NewClient("unix://"+c.socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageSize)),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	c.conn, c.lister = conn, podresourcesapi.NewPodResourcesListerClient(conn)
	return c.lister, nil
}

// devices gathers the pod's device IDs by resource. The kubelet lists a device once per NUMA
// node it is on, so IDs are deduplicated.
func devices(pod *podresourcesapi.PodResources) map[string][]string {
	out := map[string][]string{}
	for _, ctr := range pod.GetContainers() {
		for _, d := range ctr.GetDevices() {
			for _, id := range d.GetDeviceIds() {
				if !slices.Contains(out[d.GetResourceName()], id) {
					out[d.GetResourceName()] = append(out[d.GetResourceName()], id)
				}
			}
		}
	}
	for _, ids := range out {
		slices.Sort(ids)
	}
	return out
}
