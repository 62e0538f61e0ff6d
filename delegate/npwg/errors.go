package npwg

import (
	"fmt"
	"strings"
)

// Error is a problem in a pod's network selection, or in a network it selects, that a person
// can fix: a malformed annotation, a network that does not exist or is not the pod's to use, a
// configuration that cannot run. Callers find it with errors.As. Failures of the machinery
// itself (an informer that cannot list) are ordinary wrapped errors, never *Error.
type Error struct {
	// Pod is "namespace/name" of the pod; empty when an annotation is parsed without a pod.
	Pod string
	// Network names the network as the pod or the configuration wrote it ("namespace/name" for
	// NADs); empty when the problem is with an annotation as a whole.
	Network string
	// Problem says what is wrong, lowercase, with the offending value.
	Problem string
	// Fix says what would make the problem go away.
	Fix string
	// Err is the underlying cause, if any (for example the API error of a missing NAD).
	Err error
}

// Error renders "pod <pod>: network "<network>": <problem>: <fix>", leaving out parts that are
// empty.
func (e *Error) Error() string {
	var b strings.Builder
	if e.Pod != "" {
		b.WriteString("pod " + e.Pod + ": ")
	}
	if e.Network != "" {
		fmt.Fprintf(&b, "network %q: ", e.Network)
	}
	b.WriteString(e.Problem)
	if e.Fix != "" {
		b.WriteString(": " + e.Fix)
	}
	return b.String()
}

// Unwrap returns the underlying cause, so errors.Is and apierrors.IsNotFound see through.
func (e *Error) Unwrap() error { return e.Err }

// problem is a finding of one of the pure validation helpers, before the pod and network are
// known; the caller turns it into an *Error.
type problem struct {
	what string
	fix  string
}

func (p *problem) Error() string { return p.what }

func problemf(fix, format string, args ...any) *problem {
	return &problem{what: fmt.Sprintf(format, args...), fix: fix}
}
