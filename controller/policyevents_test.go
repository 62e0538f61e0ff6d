package controller

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/loom-cni/loom/policy"
)

func TestPolicyEventsJudge(t *testing.T) {
	p := newPolicyEvents(nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "bad", UID: "u1", Generation: 1},
		Spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/33"}}},
		}}},
	}
	reason, msg, report := p.judge(np, policy.FromNetworkPolicy(np))
	if !report || reason != reasonInvalidPolicy || !strings.Contains(msg, "10.0.0.0/33") {
		t.Fatalf("judge = %q %q %v, want an InvalidPolicy event naming the CIDR", reason, msg, report)
	}
	if _, _, again := p.judge(np, policy.FromNetworkPolicy(np)); again {
		t.Error("the same generation was reported twice")
	}
	np.Generation = 2
	if _, _, again := p.judge(np, policy.FromNetworkPolicy(np)); !again {
		t.Error("a new generation with the same problem was not reported")
	}
	np.Spec.Ingress[0].From[0].IPBlock.CIDR = "10.0.0.0/8"
	np.Generation = 3
	if _, _, fixed := p.judge(np, policy.FromNetworkPolicy(np)); fixed {
		t.Error("a fixed policy was reported")
	}
}
