package connectivity

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/loom-cni/loom/policy"
)

// RunLabel marks the probe pods of one run; its value names the run.
const RunLabel = "loom.dev/connectivity-run"

// IdleCommand is what a probe pod runs until it is deleted: `loomctl connectivity
// probe-idle`, which waits for its termination signal.
const IdleCommand = "probe-idle"

// ProbeLoomctl is where a probe image holds loomctl.
const ProbeLoomctl = "/usr/local/bin/loomctl"

// probeReplicas is how many probe pods each namespace and set of networks gets: two, so
// that pods alike reach each other too, and the scheduler is asked to spread them.
const probeReplicas = 2

// ProbeSpec is one kind of probe pod: a namespace and the secondary networks to attach.
type ProbeSpec struct {
	Namespace string
	Networks  []policy.NetworkID
}

// ProbeSpecs are the probe pods that stand in for the pods of s that include accepts: one
// kind per namespace and set of secondary networks such a pod is attached to.
func ProbeSpecs(s *policy.Snapshot, include func(policy.Pod) bool) []ProbeSpec {
	var out []ProbeSpec
	for _, p := range s.Pods {
		if p.Node == "" || !include(p) {
			continue
		}
		spec := ProbeSpec{Namespace: p.Namespace}
		for _, ep := range p.Endpoints {
			if ep.Network != policy.Primary && !slices.Contains(spec.Networks, ep.Network) {
				spec.Networks = append(spec.Networks, ep.Network)
			}
		}
		slices.Sort(spec.Networks)
		if !slices.ContainsFunc(out, func(o ProbeSpec) bool {
			return o.Namespace == spec.Namespace && slices.Equal(o.Networks, spec.Networks)
		}) {
			out = append(out, spec)
		}
	}
	slices.SortFunc(out, func(a, b ProbeSpec) int {
		return strings.Compare(a.Namespace+" "+fmt.Sprint(a.Networks), b.Namespace+" "+fmt.Sprint(b.Networks))
	})
	return out
}

// ProbePods runs the probes of a cluster that is not simulated, in pods of its own created
// from an image holding loomctl at ProbeLoomctl, through the API's pods/exec (kubectl exec).
// It needs to create, get and delete pods and create pods/exec in the namespaces under test.
type ProbePods struct {
	kube    kubernetes.Interface
	kubectl []string
	image   string
	run     string
	pods    []policy.PodKey
}

// NewProbePods prepares a run named by a fresh random word. kubectl is the command that
// reaches the same cluster as kube, with its flags ("kubectl", "--kubeconfig", path).
func NewProbePods(kube kubernetes.Interface, kubectl []string, image string) (*ProbePods, error) {
	if image == "" {
		return nil, errors.New("probe pods: no image: give one that holds loomctl at " + ProbeLoomctl)
	}
	if len(kubectl) == 0 {
		return nil, errors.New("probe pods: no kubectl command")
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return &ProbePods{kube: kube, kubectl: kubectl, image: image, run: hex.EncodeToString(b)}, nil
}

// Run is the run's name, the value of RunLabel on its pods.
func (pp *ProbePods) Run() string { return pp.run }

// Include accepts the run's probe pods only: the pods Plan should probe.
func (pp *ProbePods) Include(p policy.Pod) bool { return slices.Contains(pp.pods, p.PodKey) }

// Create creates the probe pods of specs. Call Delete afterwards whatever it returns.
func (pp *ProbePods) Create(ctx context.Context, specs []ProbeSpec) error {
	for i, spec := range specs {
		for r := range probeReplicas {
			pod := pp.manifest(fmt.Sprintf("loom-probe-%s-%d-%d", pp.run, i, r), spec)
			if _, err := pp.kube.CoreV1().Pods(spec.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("create probe pod %s/%s: %w", spec.Namespace, pod.Name, err)
			}
			pp.pods = append(pp.pods, policy.PodKey{Namespace: spec.Namespace, Name: pod.Name})
		}
	}
	return nil
}

// manifest is a probe pod: unprivileged, no service account token, allowed to open ICMP
// sockets and ports below 1024 through the two sysctls Kubernetes counts as safe, spread over
// the nodes, deleted within a second.
func (pp *ProbePods) manifest(name string, spec ProbeSpec) *corev1.Pod {
	var nets []string
	for _, n := range spec.Networks {
		nets = append(nets, string(n))
	}
	labels := map[string]string{RunLabel: pp.run}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: spec.Namespace, Labels: labels},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr(int64(1)),
			AutomountServiceAccountToken:  ptr(false),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot: ptr(true),
				RunAsUser:    ptr(int64(65534)),
				Sysctls: []corev1.Sysctl{
					{Name: "net.ipv4.ping_group_range", Value: "0 2147483647"},
					{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"},
				},
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
				PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
					Weight: 100,
					PodAffinityTerm: corev1.PodAffinityTerm{
						LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
						TopologyKey:   corev1.LabelHostname,
					},
				}},
			}},
			Containers: []corev1.Container{{
				Name:    "probe",
				Image:   pp.image,
				Command: []string{ProbeLoomctl, "connectivity", IdleCommand},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr(false),
					ReadOnlyRootFilesystem:   ptr(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
				},
			}},
		},
	}
	if len(nets) > 0 {
		pod.Annotations = map[string]string{nadv1.NetworkAttachmentAnnot: strings.Join(nets, ",")}
	}
	return pod
}

func ptr[T any](v T) *T { return &v }

// probePodsTimeout bounds how long the probe pods may take to run.
const probePodsTimeout = 3 * time.Minute

// Wait waits until every probe pod runs with its network-status written, telling progress
// what it waits for. A probe pod that fails is an error that names it and says why.
func (pp *ProbePods) Wait(ctx context.Context, progress io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, probePodsTimeout)
	defer cancel()
	last := ""
	for {
		var waiting []string
		for _, key := range pp.pods {
			pod, err := pp.kube.CoreV1().Pods(key.Namespace).Get(ctx, key.Name, metav1.GetOptions{})
			if err != nil {
				return fmt.Errorf("wait for probe pod %s: %w", key, err)
			}
			switch {
			case pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded:
				return fmt.Errorf("probe pod %s: %s: %s %s", key, pod.Status.Phase, pod.Status.Reason, pod.Status.Message)
			case pod.Status.Phase != corev1.PodRunning || pod.Annotations[nadv1.NetworkStatusAnnot] == "":
				waiting = append(waiting, fmt.Sprintf("%s (%s%s)", key, pod.Status.Phase, waitingReason(pod)))
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		if msg := fmt.Sprintf("waiting for %d of %d probe pods to run", len(waiting), len(pp.pods)); msg != last && progress != nil {
			fmt.Fprintln(progress, msg+"…")
			last = msg
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for probe pods: %w: still waiting for %s", ctx.Err(), strings.Join(waiting, ", "))
		case <-time.After(time.Second):
		}
	}
}

func waitingReason(pod *corev1.Pod) string {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.State.Waiting != nil && cs.State.Waiting.Reason != "" {
			return ": " + cs.State.Waiting.Reason
		}
	}
	return ""
}

// Probe runs a probe command in a probe pod through pods/exec, with kubectl exec.
func (pp *ProbePods) Probe(ctx context.Context, pod policy.PodKey, command string, stdin io.Reader, stdout io.Writer) error {
	args := append(slices.Clone(pp.kubectl[1:]), "exec", "-i", "-n", pod.Namespace, pod.Name, "-c", "probe", "--",
		ProbeLoomctl, "connectivity", command)
	cmd := exec.CommandContext(ctx, pp.kubectl[0], args...)
	var stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("exec %s in %s: %w: %s", command, pod, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// Delete deletes the run's probe pods, in every namespace it created one in; a pod already
// gone is no error.
func (pp *ProbePods) Delete(ctx context.Context) error {
	var namespaces []string
	for _, k := range pp.pods {
		if !slices.Contains(namespaces, k.Namespace) {
			namespaces = append(namespaces, k.Namespace)
		}
	}
	var errs []error
	for _, ns := range namespaces {
		err := pp.kube.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: RunLabel + "=" + pp.run})
		if err != nil {
			errs = append(errs, fmt.Errorf("delete the probe pods in %s (label %s=%s): %w", ns, RunLabel, pp.run, err))
		}
	}
	return errors.Join(errs...)
}

// AwaitSnapshot returns the first snapshot that holds every probe pod with an address on
// each of its networks; snapshot is the policy source's.
func (pp *ProbePods) AwaitSnapshot(ctx context.Context, snapshot func() policy.Snapshot) (policy.Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		s := snapshot()
		seen := 0
		for _, p := range s.Pods {
			if pp.Include(p) && p.Node != "" && len(p.Endpoints) > 0 && !slices.ContainsFunc(p.Endpoints, func(ep policy.Endpoint) bool { return len(ep.IPs) == 0 }) {
				seen++
			}
		}
		if seen == len(pp.pods) {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return s, fmt.Errorf("wait for the probe pods' addresses: %w: %d of %d known", ctx.Err(), seen, len(pp.pods))
		case <-time.After(200 * time.Millisecond):
		}
	}
}
