package podruntime

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// newContainerID returns a random sandbox id, 64 hex digits as containerd's.
func newContainerID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b)
}

// netnsName names a pod's namespace so that `ip netns` in the node shows whose it is:
// NAMESPACE_POD_ID8 (Kubernetes names never hold an underscore).
func netnsName(namespace, pod, containerID string) string {
	if len(pod) > 100 {
		pod = pod[:100]
	}
	return namespace + "_" + pod + "_" + containerID[:8]
}

// createNetNS creates a network namespace with loopback up and pins it at path.
func createNetNS(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("create netns pin: %w", err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: it ends up in the new namespace, and Go ends a
		// locked thread when its goroutine returns, so no other goroutine runs there.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare netns: %w", err)
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("pin netns at %s: %w", path, err)
			return
		}
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		_ = removeNetNS(path)
		return err
	}
	return nil
}

// netnsPinned says whether path is a pinned namespace rather than a stale file.
func netnsPinned(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// removeNetNS unpins and removes a namespace; one already gone is fine.
func removeNetNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unpin netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove netns pin %s: %w", path, err)
	}
	return nil
}
