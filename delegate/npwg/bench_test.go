package npwg

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkResolve measures what loomd spends on the ADD path to turn a pod with three
// secondary networks (both annotation forms' work: JSON parsing, validation, NAD config
// rewriting) into attachment specs.
func BenchmarkResolve(b *testing.B) {
	r, err := NewResolver(Config{NADs: testNADs(), DefaultNetwork: "loom"})
	if err != nil {
		b.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "p", UID: "u", Annotations: map[string]string{
		"k8s.v1.cni.cncf.io/networks": `[{"name":"net-a","interface":"data0"},{"name":"net-caps","ips":["10.1.1.5/24"],"mac":"02:00:00:00:00:01"},{"name":"net-a"}]`,
	}}}
	b.ReportAllocs()
	for b.Loop() {
		specs, err := r.Resolve(pod, "eth0", map[string]any{"portMappings": []any{}})
		if err != nil || len(specs) != 4 {
			b.Fatalf("Resolve = %d specs, %v", len(specs), err)
		}
	}
}
