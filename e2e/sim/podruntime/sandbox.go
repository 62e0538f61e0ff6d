package podruntime

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/libcni"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// cniTimeout bounds one ADD or DEL, as the CRI's request deadline does.
const cniTimeout = 2 * time.Minute

// runSandbox sets up a sandbox for the pod: record, namespace, CNI ADD. With no network
// configuration yet the pod stays Pending and is looked at again shortly.
func (r *Runtime) runSandbox(ctx context.Context, pod *corev1.Pod) error {
	conf, err := loadNetwork(r.cfg.CNIConfDir)
	if err != nil {
		r.log.Debug("network not ready, pod stays pending", "namespace", pod.Namespace, "pod", pod.Name, "err", err)
		r.queue.AddAfter(pod.Namespace+"/"+pod.Name, time.Second)
		return nil
	}
	id := newContainerID()
	sb := Sandbox{
		ContainerID: id,
		NetNS:       filepath.Join(r.cfg.NetNSDir, netnsName(pod.Namespace, pod.Name, id)),
		Namespace:   pod.Namespace,
		Pod:         pod.Name,
		UID:         pod.UID,
		Network:     conf.Name,
		IfName:      "eth0",
		Args:        cniArgs(pod, id),
		Created:     time.Now(),
	}
	caps, capsErr := capabilityArgs(pod)
	if capsErr != nil {
		return r.failPod(ctx, pod, fmt.Sprintf("Failed to create pod sandbox: %v", capsErr))
	}
	sb.CapabilityArgs = caps
	r.gcMu.RLock()
	defer r.gcMu.RUnlock()
	devices, devErr := r.allocateDevices(ctx, pod)
	if devErr != nil {
		// The kubelet refuses a pod whose devices it cannot allocate at admission.
		return r.failPod(ctx, pod, fmt.Sprintf("Pod was rejected: %v", devErr))
	}
	sb.Devices = devices
	if err := r.store.Put(sb); err != nil {
		r.releaseDevices(sb)
		return err
	}
	if err := createNetNS(sb.NetNS); err != nil {
		r.releaseDevices(sb)
		return errors.Join(err, r.store.Delete(id))
	}
	log := r.log.With("namespace", pod.Namespace, "pod", pod.Name, "containerID", id[:12], "network", conf.Name)
	addCtx, cancel := context.WithTimeout(ctx, cniTimeout)
	started := time.Now()
	result, addErr := r.cni.AddNetworkList(addCtx, conf, sb.runtimeConf())
	sb.AddTime = time.Since(started)
	cancel()
	if addErr == nil {
		sb.IPs, addErr = resultIPs(result, sb.IfName)
	}
	if addErr != nil {
		log.Warn("CNI ADD failed", "err", addErr)
		msg := fmt.Sprintf("Failed to create pod sandbox: failed to setup network for sandbox %q: %v", id, addErr)
		// containerd tears down a sandbox whose setup failed; if that fails too, the record
		// stays and the pod, now Failed, has it torn down on a later sync.
		if err := r.teardown(ctx, sb); err != nil {
			log.Warn("teardown after failed ADD failed", "err", err)
		}
		return r.failPod(ctx, pod, msg)
	}
	sb.Ready = true
	if err := r.store.Put(sb); err != nil {
		return err
	}
	log.Info("sandbox ready", "netns", sb.NetNSName(), "ips", sb.IPs)
	return r.reportRunning(ctx, pod, sb)
}

// reportRunning makes the pod's status say Running with the sandbox's addresses.
func (r *Runtime) reportRunning(ctx context.Context, pod *corev1.Pod, sb Sandbox) error {
	if pod.Status.Phase == corev1.PodRunning && len(sb.IPs) > 0 && pod.Status.PodIP == sb.IPs[0] {
		return nil
	}
	return r.updateStatus(ctx, pod, func(p *corev1.Pod) corev1.PodStatus {
		return runningStatus(p, sb, r.cfg.NodeIP, metav1.Now())
	})
}

// failPod ends the pod with FailedCreatePodSandBox and records a Warning event, as kubelet
// reports the error.
func (r *Runtime) failPod(ctx context.Context, pod *corev1.Pod, msg string) error {
	now := metav1.Now()
	err := r.updateStatus(ctx, pod, func(p *corev1.Pod) corev1.PodStatus {
		return failedStatus(p, msg, r.cfg.NodeIP, now)
	})
	if err != nil {
		return err
	}
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: pod.Name + ".", Namespace: pod.Namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace,
			Name: pod.Name, UID: pod.UID, ResourceVersion: pod.ResourceVersion},
		Reason: ReasonFailedCreatePodSandBox, Message: msg, Type: corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: "kubelet", Host: r.cfg.NodeName},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
		ReportingController: "kubelet", ReportingInstance: r.cfg.NodeName,
	}
	if _, err := r.cfg.Client.CoreV1().Events(pod.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		r.log.Warn("record event", "namespace", pod.Namespace, "pod", pod.Name, "err", err)
	}
	return nil
}

// teardown calls CNI DEL for the sandbox, then removes its namespace and record. A
// namespace that is already gone is fine; DEL is told of a path that no longer exists, which
// plugins treat as nothing to clean inside it.
func (r *Runtime) teardown(ctx context.Context, sb Sandbox) error {
	if !netnsPinned(sb.NetNS) {
		if err := removeNetNS(sb.NetNS); err != nil {
			return err
		}
	}
	conf, err := r.delNetwork(sb)
	if err != nil {
		return fmt.Errorf("teardown sandbox %s of %s/%s: %w", sb.ContainerID[:12], sb.Namespace, sb.Pod, err)
	}
	delCtx, cancel := context.WithTimeout(ctx, cniTimeout)
	err = r.cni.DelNetworkList(delCtx, conf, sb.runtimeConf())
	cancel()
	if err != nil {
		return fmt.Errorf("teardown sandbox %s of %s/%s: CNI DEL: %w", sb.ContainerID[:12], sb.Namespace, sb.Pod, err)
	}
	if err := removeNetNS(sb.NetNS); err != nil {
		return err
	}
	r.releaseDevices(sb)
	if err := r.store.Delete(sb.ContainerID); err != nil {
		return err
	}
	r.log.Info("sandbox torn down", "namespace", sb.Namespace, "pod", sb.Pod, "containerID", sb.ContainerID[:12])
	return nil
}

// delNetwork picks the configuration DEL runs with: the one libcni cached at ADD if there
// is one, else the current configuration, as containerd does.
func (r *Runtime) delNetwork(sb Sandbox) (*libcni.NetworkConfigList, error) {
	cached, _, err := r.cni.GetNetworkListCachedConfig(&libcni.NetworkConfigList{Name: sb.Network}, sb.runtimeConf())
	if err == nil && len(cached) > 0 {
		if conf, parseErr := libcni.ConfListFromBytes(cached); parseErr == nil {
			return conf, nil
		}
	}
	conf, err := loadNetwork(r.cfg.CNIConfDir)
	if err != nil {
		return nil, err
	}
	return conf, nil
}
