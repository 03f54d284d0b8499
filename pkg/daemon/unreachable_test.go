package daemon

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
)

func TestUnreachableCount(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("other"), 0},
		{fmt.Errorf("route via 10.9.0.31: %w", syscall.ENETUNREACH), 1},
		{errors.Join(fmt.Errorf("a: %w", syscall.ENETUNREACH), errors.New("b"), fmt.Errorf("c: %w", syscall.ENETUNREACH)), 2},
	} {
		if got := unreachable(tc.err); got != tc.want {
			t.Errorf("unreachable(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
