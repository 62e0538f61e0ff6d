package tenants

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types of a Tenant's status.
const (
	// ConditionValid is True when Parse found no problem in the spec, False with reason
	// ReasonInvalidSpec and the problems in its message otherwise.
	ConditionValid = "Valid"
	// ConditionNamespacesConflict is True when a namespace the tenant selects is selected by
	// another tenant too: such a namespace belongs to neither.
	ConditionNamespacesConflict = "NamespacesConflict"
)

// Reasons of the conditions.
const (
	ReasonValidSpec      = "ValidSpec"
	ReasonInvalidSpec    = "InvalidSpec"
	ReasonNoConflict     = "NoConflict"
	ReasonSharedSelected = "NamespacesSelectedByOtherTenants"
)

// maxMessage keeps a condition's message well below the API's 32 KiB limit.
const maxMessage = 4096

// ValidCondition returns the Valid condition for a spec of the given generation with the
// given problems. LastTransitionTime is left for meta.SetStatusCondition to fill in.
func ValidCondition(generation int64, problems []Problem) metav1.Condition {
	c := metav1.Condition{Type: ConditionValid, ObservedGeneration: generation}
	if len(problems) == 0 {
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, ReasonValidSpec, "the spec is valid"
		return c
	}
	parts := make([]string, len(problems))
	for i, p := range problems {
		parts[i] = p.Error()
	}
	c.Status, c.Reason = metav1.ConditionFalse, ReasonInvalidSpec
	c.Message = truncate(strings.Join(parts, "; ") + "; the entries at fault are left out")
	return c
}

// NamespacesConflictCondition returns the NamespacesConflict condition for a tenant whose
// conflicts (namespace → the other tenants that select it, as Directory.Conflicts returns)
// are given.
func NamespacesConflictCondition(generation int64, conflicts map[string][]Name) metav1.Condition {
	c := metav1.Condition{Type: ConditionNamespacesConflict, ObservedGeneration: generation}
	if len(conflicts) == 0 {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, ReasonNoConflict, "no other tenant selects its namespaces"
		return c
	}
	var parts []string
	for _, ns := range sortedKeys(conflicts) {
		parts = append(parts, "namespace "+ns+" is also selected by "+joinNames(conflicts[ns]))
	}
	c.Status, c.Reason = metav1.ConditionTrue, ReasonSharedSelected
	c.Message = truncate(strings.Join(parts, "; ") + "; such namespaces belong to no tenant and their pods are denied every network")
	return c
}

func truncate(s string) string {
	if len(s) <= maxMessage {
		return s
	}
	cut := maxMessage - len("…")
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
