package fakekubelet

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// connectTimeout bounds dialing a registering plugin back and asking its options, as the
// kubelet's device manager bounds its dial.
const connectTimeout = 10 * time.Second

// plugin is the kubelet's connection to one registered device plugin.
type plugin struct {
	resource string
	path     string
	conn     *grpc.ClientConn
	client   pluginapi.DevicePluginClient
	options  *pluginapi.DevicePluginOptions

	cancel context.CancelFunc
	done   chan struct{} // closed when the ListAndWatch goroutine ends
}

// connect dials the plugin at path and asks its options.
func connect(ctx context.Context, resource, path string) (*plugin, error) {
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial device plugin %s at %s: %w", resource, path, err)
	}
	client := pluginapi.NewDevicePluginClient(conn)
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	options, err := client.GetDevicePluginOptions(ctx, &pluginapi.Empty{})
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("get options of device plugin %s at %s: %w", resource, path, err)
	}
	return &plugin{resource: resource, path: path, conn: conn, client: client, options: options}, nil
}

// start runs the plugin's ListAndWatch stream in the background, telling k what it lists.
func (p *plugin) start(k *Kubelet) {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		err := p.listAndWatch(ctx, k)
		if ctx.Err() == nil {
			// The plugin hung up: nobody will close the connection, the kubelet forgets it.
			k.lost(p, err)
			_ = p.conn.Close()
		}
	}()
}

func (p *plugin) listAndWatch(ctx context.Context, k *Kubelet) error {
	stream, err := p.client.ListAndWatch(ctx, &pluginapi.Empty{})
	if err != nil {
		return fmt.Errorf("list and watch %s: %w", p.resource, err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("list and watch %s: %w", p.resource, err)
		}
		k.listed(p, resp.Devices)
	}
}

// close ends the stream and the connection and waits for the stream's goroutine.
func (p *plugin) close() {
	if p.cancel != nil {
		p.cancel()
		<-p.done
	}
	_ = p.conn.Close()
}
