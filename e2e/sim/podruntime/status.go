package podruntime

import (
	"net/netip"
	"runtime"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReasonFailedCreatePodSandBox is kubelet's reason for a sandbox that could not be set up.
const ReasonFailedCreatePodSandBox = "FailedCreatePodSandBox"

// podConditionTypes are the conditions kubelet reports for a running pod.
var podConditionTypes = []corev1.PodConditionType{
	corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady, corev1.PodScheduled,
}

// setCondition sets a condition, moving its transition time only when its status changes.
func setCondition(st *corev1.PodStatus, c corev1.PodCondition) {
	for i := range st.Conditions {
		if st.Conditions[i].Type == c.Type {
			if st.Conditions[i].Status == c.Status {
				c.LastTransitionTime = st.Conditions[i].LastTransitionTime
			}
			st.Conditions[i] = c
			return
		}
	}
	st.Conditions = append(st.Conditions, c)
}

func setHost(st *corev1.PodStatus, hostIP netip.Addr, now metav1.Time) {
	st.HostIP = hostIP.String()
	st.HostIPs = []corev1.HostIP{{IP: hostIP.String()}}
	if st.StartTime == nil {
		st.StartTime = &now
	}
}

// runningStatus is the status kubelet reports once the sandbox is up and every container
// runs: each container gets a made-up containerd id.
func runningStatus(pod *corev1.Pod, sb Sandbox, hostIP netip.Addr, now metav1.Time) corev1.PodStatus {
	st := *pod.Status.DeepCopy()
	st.Phase = corev1.PodRunning
	st.Reason, st.Message = "", ""
	setHost(&st, hostIP, now)
	st.PodIPs = nil
	for _, ip := range sb.IPs {
		st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip})
	}
	st.PodIP = ""
	if len(sb.IPs) > 0 {
		st.PodIP = sb.IPs[0]
	}
	for _, t := range podConditionTypes {
		setCondition(&st, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	st.InitContainerStatuses = nil
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, ContainerID: "containerd://" + newContainerID(), Ready: true,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 0, Reason: "Completed", StartedAt: now, FinishedAt: now}},
		})
	}
	st.ContainerStatuses = nil
	started := true
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, ContainerID: "containerd://" + newContainerID(),
			Ready: true, Started: &started,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	return st
}

// failedStatus is the status of a pod whose sandbox could not be set up. Kubelet would
// retry forever; the simulated cluster ends the pod so that tests see the error.
func failedStatus(pod *corev1.Pod, message string, hostIP netip.Addr, now metav1.Time) corev1.PodStatus {
	st := *pod.Status.DeepCopy()
	st.Phase = corev1.PodFailed
	st.Reason, st.Message = ReasonFailedCreatePodSandBox, message
	setHost(&st, hostIP, now)
	setCondition(&st, corev1.PodCondition{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionFalse, LastTransitionTime: now})
	setCondition(&st, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: now,
		Reason: ReasonFailedCreatePodSandBox, Message: message})
	setCondition(&st, corev1.PodCondition{Type: corev1.ContainersReady, Status: corev1.ConditionFalse, LastTransitionTime: now,
		Reason: ReasonFailedCreatePodSandBox})
	st.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}},
		})
	}
	return st
}

// nodeObject is the Node the runtime registers; it has a spec.podCIDR only if podCIDR is
// valid.
func nodeObject(name string, podCIDR netip.Prefix) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			corev1.LabelHostname: name, corev1.LabelOSStable: "linux", corev1.LabelArchStable: runtime.GOARCH,
		}},
	}
	if podCIDR.IsValid() {
		n.Spec = corev1.NodeSpec{PodCIDR: podCIDR.String(), PodCIDRs: []string{podCIDR.String()}}
	}
	return n
}

// nodeStatus is the Node's status: Ready while a CNI configuration exists, otherwise
// NotReady with kubelet's NetworkPluginNotReady message.
func nodeStatus(name string, ip netip.Addr, networkErr error, devices nodeDevices, now metav1.Time) corev1.NodeStatus {
	ready := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		Message: "kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now}
	if networkErr != nil {
		ready.Status, ready.Reason = corev1.ConditionFalse, "KubeletNotReady"
		ready.Message = "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: " + networkErr.Error()
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse(strconv.Itoa(runtime.NumCPU())),
		corev1.ResourceMemory: resource.MustParse("8Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	allocatable := capacity.DeepCopy()
	for name, n := range devices.capacity {
		capacity[corev1.ResourceName(name)] = *resource.NewQuantity(int64(n), resource.DecimalSI)
		allocatable[corev1.ResourceName(name)] = *resource.NewQuantity(int64(devices.allocatable[name]), resource.DecimalSI)
	}
	cond := func(t corev1.NodeConditionType, reason string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: allocatable,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeMemoryPressure, "KubeletHasSufficientMemory"),
			cond(corev1.NodeDiskPressure, "KubeletHasNoDiskPressure"),
			cond(corev1.NodePIDPressure, "KubeletHasSufficientPID"),
			ready,
		},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip.String()}, {Type: corev1.NodeHostName, Address: name}},
		NodeInfo: corev1.NodeSystemInfo{
			OperatingSystem: "linux", Architecture: runtime.GOARCH, OSImage: "Loom simulated node",
			KubeletVersion: "v1.34.4", ContainerRuntimeVersion: "loom-sim://1",
		},
	}
}
