package perf

import (
	"fmt"
	"io"
	"os"
)

// Verdict prints the one line every Loom benchmark target ends with:
//
//	BENCH <name> <measured> <unit> target <op> <value> PASS|FAIL
//
// op is one of <, <=, ==, >=; the verdict is computed from measured here, so the line
// carries its own evidence.
func Verdict(name string, measured float64, unit, op string, target float64) {
	writeVerdict(os.Stdout, name, measured, unit, op, target)
}

func writeVerdict(w io.Writer, name string, measured float64, unit, op string, target float64) {
	pass := map[string]bool{"<": measured < target, "<=": measured <= target, "==": measured == target, ">=": measured >= target}[op]
	verdict := "FAIL"
	if pass {
		verdict = "PASS"
	}
	fmt.Fprintf(w, "BENCH %s %.3g %s target %s %g %s\n", name, measured, unit, op, target, verdict)
}
