package perf

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPairedMedian(t *testing.T) {
	r := PairedRatios([]float64{9, 8, 30, 10}, []float64{10, 10, 10, 10})
	if want := []float64{0.9, 0.8, 3, 1}; !slices.Equal(r, want) {
		t.Fatalf("PairedRatios = %v, want %v", r, want)
	}
	if m := Median(r); m != 0.95 {
		t.Errorf("Median(%v) = %g, want 0.95", r, m)
	}
	if !slices.Equal(r, []float64{0.9, 0.8, 3, 1}) {
		t.Errorf("Median reordered its argument: %v", r)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		name string
		xs   []float64
		want float64
	}{
		{"none", nil, 0},
		{"one", []float64{7}, 7},
		{"odd", []float64{3, 1, 2}, 2},
		{"even", []float64{4, 1, 3, 2}, 2.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if m := Median(tc.xs); m != tc.want {
				t.Errorf("Median(%v) = %g, want %g", tc.xs, m, tc.want)
			}
		})
	}
}

func TestMedianDuration(t *testing.T) {
	ds := []time.Duration{30 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond}
	if m := MedianDuration(ds); m != 25*time.Millisecond {
		t.Errorf("MedianDuration(%v) = %s, want 25ms", ds, m)
	}
	if m := MedianDuration(nil); m != 0 {
		t.Errorf("MedianDuration(nil) = %s, want 0", m)
	}
}

func TestJoin(t *testing.T) {
	if got, want := Join([]float64{0.9, 1, 12.345}, "%.2f"), "0.90 1.00 12.35"; got != want {
		t.Errorf("Join = %q, want %q", got, want)
	}
	if got := Join(nil, "%.2f"); got != "" {
		t.Errorf("Join(nil) = %q, want \"\"", got)
	}
}

func TestSeconds(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                       "1",
		400 * time.Millisecond:  "1",
		time.Second:             "1",
		2600 * time.Millisecond: "3",
	} {
		if got := seconds(d); got != want {
			t.Errorf("seconds(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestLastLines(t *testing.T) {
	if got, want := lastLines([]byte("a\nb\nc\nd\n"), 3), "b / c / d"; got != want {
		t.Errorf("lastLines = %q, want %q", got, want)
	}
	if got, want := lastLines([]byte("only\n"), 3), "only"; got != want {
		t.Errorf("lastLines = %q, want %q", got, want)
	}
}

func TestVerdict(t *testing.T) {
	for _, tc := range []struct {
		measured float64
		op       string
		target   float64
		want     string
	}{
		{17.9, "<", 20, "BENCH x 17.9 ms target < 20 PASS\n"},
		{20, "<", 20, "BENCH x 20 ms target < 20 FAIL\n"},
		{0.95, ">=", 0.95, "BENCH x 0.95 ms target >= 0.95 PASS\n"},
		{1.13, "<=", 1.1, "BENCH x 1.13 ms target <= 1.1 FAIL\n"},
		{0, "==", 0, "BENCH x 0 ms target == 0 PASS\n"},
		{1, "!=", 0, "BENCH x 1 ms target != 0 FAIL\n"},
	} {
		var b strings.Builder
		writeVerdict(&b, "x", tc.measured, "ms", tc.op, tc.target)
		if b.String() != tc.want {
			t.Errorf("got %q, want %q", b.String(), tc.want)
		}
	}
}
