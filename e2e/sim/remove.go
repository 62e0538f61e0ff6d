package sim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// RemoveNode takes a node away as losing its machine would. Its supervisor, loomd, pod
// runtime and whatever else runs in it are killed without warning; its network namespaces
// (the node's, its pods', and with them its underlay link) and its mount namespace go; and
// the API forgets it as a node lifecycle controller and an administrator would: its pods are
// force-deleted and its Node object deleted. The cluster's state no longer lists it, so
// Nodes and Down leave it out; its directory keeps its logs. Routes that the other nodes or
// the router hold toward it stay, as on a real network. The other nodes keep running, and
// if the node ran the scheduler, the next node takes it over within a second.
//
// A RemoveNode that fails part way (the API server is down) can be called again.
func (c *Cluster) RemoveNode(ctx context.Context, name string) error {
	n, err := c.Node(name)
	if err != nil {
		return err
	}
	if err = c.killNode(ctx, n); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	if err = c.forgetNode(ctx, n); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	c.st.Nodes = slices.DeleteFunc(c.Nodes(), func(m Node) bool { return m.Name == name })
	if err = writeState(c.l.dir, c.st); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	c.p.printf("%s removed: processes killed, namespaces deleted, pods and Node deleted", name)
	return nil
}

// killNode kills every process in the node's network and mount namespaces and removes the
// namespaces and the node's underlay link. Pod namespaces are pinned inside the node's mount
// namespace, so they go with it.
func (c *Cluster) killNode(ctx context.Context, n Node) error {
	mountPin := c.slot.nsPin(n.Name)
	netnsPin := filepath.Join("/run/netns", n.NetNS)
	inodes := map[uint64]bool{}
	for _, pin := range []string{mountPin, netnsPin} {
		if !isNamespacePin(pin) {
			continue
		}
		ino, err := nsInode(pin)
		if err != nil {
			return err
		}
		inodes[ino] = true
	}
	supervisor, supervisorErr := readPidFile(c.slot.pidFile("node-" + n.Name))
	// A process may start another while it is being killed (the supervisor a loomd, the
	// runtime a plugin): kill until none is left.
	err := poll(ctx, 5*time.Second, func() (bool, error) {
		procs := procsInNamespaces(inodes)
		if supervisorErr == nil && supervisor.alive() {
			procs = append(procs, supervisor)
		}
		for _, p := range procs {
			p.signal(syscall.SIGKILL)
		}
		return len(procs) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("kill the processes of %s: %w", n.Name, err)
	}
	errs := []error{unmountPin(mountPin), c.deleteUnderlayLink(n.Name), unmountPin(netnsPin)}
	if err := os.Remove(c.slot.pidFile("node-" + n.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// deleteUnderlayLink deletes a node's veth from the underlay; its eth0 goes with it.
func (c *Cluster) deleteUnderlayLink(name string) error {
	ul, err := openNetNS(c.slot.underlayNetNS())
	if err != nil {
		return err
	}
	defer ul.close()
	l, err := ul.LinkByName(name)
	if _, notFound := errors.AsType[netlink.LinkNotFoundError](err); notFound {
		return nil
	}
	if err == nil {
		err = ul.LinkDel(l)
	}
	if err != nil {
		return fmt.Errorf("delete underlay link %s: %w", name, err)
	}
	return nil
}

// forgetNode force-deletes the node's pods and deletes its Node object.
func (c *Cluster) forgetNode(ctx context.Context, n Node) error {
	pods, err := c.cs.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", n.Name).String(),
	})
	if err != nil {
		return fmt.Errorf("list the pods of %s: %w", n.Name, err)
	}
	zero := int64(0)
	for _, p := range pods.Items {
		err := c.cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete pod %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	if err := c.cs.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete Node %s: %w", n.Name, err)
	}
	return nil
}
