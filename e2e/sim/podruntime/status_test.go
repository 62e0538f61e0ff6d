package podruntime

import (
	"errors"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestRunningStatus(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{{Name: "init", Image: "i"}},
		Containers:     []corev1.Container{{Name: "a", Image: "x"}, {Name: "b", Image: "y"}},
	}}
	now := metav1.Now()
	st := runningStatus(pod, Sandbox{IPs: []string{"10.244.1.5"}}, netip.MustParseAddr("198.18.1.11"), now)
	if st.Phase != corev1.PodRunning || st.PodIP != "10.244.1.5" || len(st.PodIPs) != 1 || st.HostIP != "198.18.1.11" || st.StartTime == nil {
		t.Errorf("status %+v", st)
	}
	if len(st.Conditions) != len(podConditionTypes) {
		t.Errorf("conditions %v", st.Conditions)
	}
	for _, c := range st.Conditions {
		if c.Status != corev1.ConditionTrue {
			t.Errorf("condition %s is %s", c.Type, c.Status)
		}
	}
	if len(st.ContainerStatuses) != 2 || st.ContainerStatuses[1].State.Running == nil || !st.ContainerStatuses[1].Ready {
		t.Errorf("container statuses %+v", st.ContainerStatuses)
	}
	if len(st.InitContainerStatuses) != 1 || st.InitContainerStatuses[0].State.Terminated == nil {
		t.Errorf("init container statuses %+v", st.InitContainerStatuses)
	}
}

func TestFailedStatus(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a"}}}}
	st := failedStatus(pod, "boom", netip.MustParseAddr("198.18.1.12"), metav1.Now())
	if st.Phase != corev1.PodFailed || st.Reason != ReasonFailedCreatePodSandBox || st.Message != "boom" {
		t.Errorf("status %+v", st)
	}
	var ready *corev1.PodCondition
	for i := range st.Conditions {
		if st.Conditions[i].Type == corev1.PodReady {
			ready = &st.Conditions[i]
		}
	}
	if ready == nil || ready.Status != corev1.ConditionFalse || ready.Reason != ReasonFailedCreatePodSandBox || ready.Message != "boom" {
		t.Errorf("Ready condition %+v", ready)
	}
}

func TestNodeStatus(t *testing.T) {
	ip := netip.MustParseAddr("198.18.1.11")
	readiness := func(st corev1.NodeStatus) corev1.NodeCondition {
		for _, c := range st.Conditions {
			if c.Type == corev1.NodeReady {
				return c
			}
		}
		return corev1.NodeCondition{}
	}
	if c := readiness(nodeStatus("node1", ip, nil, nodeDevices{}, metav1.Now())); c.Status != corev1.ConditionTrue {
		t.Errorf("Ready with a network: %+v", c)
	}
	c := readiness(nodeStatus("node1", ip, errors.New("no network config found"), nodeDevices{}, metav1.Now()))
	if c.Status != corev1.ConditionFalse || c.Reason != "KubeletNotReady" {
		t.Errorf("Ready without a network: %+v", c)
	}
	n := nodeObject("node1", netip.MustParsePrefix("10.244.1.0/24"))
	if n.Spec.PodCIDR != "10.244.1.0/24" || n.Labels[corev1.LabelHostname] != "node1" {
		t.Errorf("node object %+v", n)
	}
	// Loom's IPAM, not spec.podCIDR, gives pods their addresses in Loom's own modes.
	if n := nodeObject("node1", netip.Prefix{}); n.Spec.PodCIDR != "" || len(n.Spec.PodCIDRs) != 0 {
		t.Errorf("node object without a pod CIDR: %+v", n.Spec)
	}
}
