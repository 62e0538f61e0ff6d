package podresources_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/loom-cni/loom/internal/fakekubelet"
	"github.com/loom-cni/loom/sriov/podresources"
)

// shortDir returns a fresh directory with a path short enough for unix sockets.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "loompr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return c
}

// kubelet starts a fake kubelet answering Get as get says, with pod ns/web holding two
// devices of loom.dev/a in container app, one of loom.dev/b in container sidecar, and
// ns/other one of loom.dev/a. It returns the PodResources socket.
func kubelet(t *testing.T, get fakekubelet.GetSupport) (*fakekubelet.Kubelet, string) {
	t.Helper()
	dir := shortDir(t)
	socket := filepath.Join(dir, "pod-resources", "kubelet.sock")
	k, err := fakekubelet.Start(fakekubelet.Config{
		PluginDir:          filepath.Join(dir, "device-plugins"),
		PodResourcesSocket: socket,
		PodResourcesGet:    get,
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	web := fakekubelet.Pod{Namespace: "ns", Name: "web", UID: types.UID("u-web")}
	k.Restore(web, "app", "loom.dev/a", []string{"0000:3b:02.1", "0000:3b:02.0"})
	k.Restore(web, "sidecar", "loom.dev/b", []string{"0000:86:02.0"})
	k.Restore(fakekubelet.Pod{Namespace: "ns", Name: "other", UID: types.UID("u-other")}, "app", "loom.dev/a", []string{"0000:3b:02.2"})
	return k, socket
}

func TestDevices(t *testing.T) {
	want := map[string][]string{
		"loom.dev/a": {"0000:3b:02.0", "0000:3b:02.1"},
		"loom.dev/b": {"0000:86:02.0"},
	}
	for _, tc := range []struct {
		name string
		get  fakekubelet.GetSupport
	}{
		{"Get", fakekubelet.GetEnabled},
		{"Get behind a gate that is off", fakekubelet.GetDisabled},
		{"no Get", fakekubelet.GetUnimplemented},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, socket := kubelet(t, tc.get)
			c := podresources.New(socket)
			defer c.Close()
			// Twice: the second call goes the way the first found.
			for range 2 {
				got, err := c.Devices(ctx(t), "ns", "web")
				if err != nil || !reflect.DeepEqual(got, want) {
					t.Errorf("Devices(ns/web) = %v, %v; want %v", got, err, want)
				}
			}
			if _, err := c.Devices(ctx(t), "ns", "missing"); !errors.Is(err, podresources.ErrPodNotFound) {
				t.Errorf("Devices(ns/missing): err = %v, want ErrPodNotFound", err)
			}
		})
	}
}

func TestNoKubelet(t *testing.T) {
	socket := filepath.Join(shortDir(t), "kubelet.sock")
	c := podresources.New(socket)
	defer c.Close()
	_, err := c.Devices(ctx(t), "ns", "web")
	if err == nil || errors.Is(err, podresources.ErrPodNotFound) {
		t.Fatalf("Devices without a kubelet: err = %v, want a connection error", err)
	}
	if !strings.Contains(err.Error(), socket) {
		t.Errorf("error %q does not name the socket %s", err, socket)
	}
}

func TestKubeletRestart(t *testing.T) {
	k, socket := kubelet(t, fakekubelet.GetEnabled)
	c := podresources.New(socket)
	defer c.Close()
	if _, err := c.Devices(ctx(t), "ns", "web"); err != nil {
		t.Fatal(err)
	}
	if err := k.Restart(); err != nil {
		t.Fatal(err)
	}
	// The connection is made again; allocations outlive a kubelet restart.
	got, err := c.Devices(ctx(t), "ns", "other")
	if want := map[string][]string{"loom.dev/a": {"0000:3b:02.2"}}; err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("after a kubelet restart: Devices(ns/other) = %v, %v; want %v", got, err, want)
	}
}
