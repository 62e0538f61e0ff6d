package perf

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// PairedRatios divides each round's figure by the baseline's of the same round.
func PairedRatios(figures, baseline []float64) []float64 {
	r := make([]float64, len(figures))
	for i := range figures {
		r[i] = figures[i] / baseline[i]
	}
	return r
}

// Median returns the median of xs, the mean of the middle two if there is an even number of
// them, and 0 if there are none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// MedianDuration is Median of durations.
func MedianDuration(ds []time.Duration) time.Duration {
	fs := make([]float64, len(ds))
	for i, d := range ds {
		fs[i] = float64(d)
	}
	return time.Duration(Median(fs))
}

// Join renders each of xs with format, separated by spaces.
func Join(xs []float64, format string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(s, " ")
}
