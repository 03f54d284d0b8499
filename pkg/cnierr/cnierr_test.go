package cnierr

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weft-cni/weft/pkg/nodelease"
	"github.com/weft-cni/weft/pkg/podnet"
)

// TestClassify: codes by cause, and no message lost when an error wraps or
// joins a CNI error (an ADD failure and its rollback's failure).
func TestClassify(t *testing.T) {
	ipamDel := types.NewError(types.ErrTryAgainLater, "ipam DEL failed", "store locked")
	for _, tt := range []struct {
		name string
		err  error
		code uint
		want []string // in the message
	}{
		{"plain", errors.New("boom"), types.ErrInternal, []string{"boom"}},
		{"etcd away", fmt.Errorf("sync: %w", nodelease.ErrUnavailable), types.ErrTryAgainLater, []string{"sync"}},
		{"lock wait timed out", fmt.Errorf("locking /var/lib/cni/weft: %w", context.DeadlineExceeded), types.ErrTryAgainLater, []string{"locking"}},
		{"node netns", fmt.Errorf("%w: /proc/1/ns/net", podnet.ErrNotPodNS), types.ErrInvalidEnvironmentVariables, []string{"/proc/1/ns/net"}},
		{"cni error as is", ipamDel, types.ErrTryAgainLater, []string{"ipam DEL failed", "store locked"}},
		{"wrapped cni error", fmt.Errorf("releasing 172.7.21.5: %w", ipamDel), types.ErrTryAgainLater, []string{"releasing 172.7.21.5", "ipam DEL failed"}},
		{"failure and rollback", errors.Join(errors.New("creating veth: file exists"), ipamDel), types.ErrInternal,
			[]string{"creating veth: file exists", "ipam DEL failed"}},
		{"config failure and rollback", errors.Join(fmt.Errorf("%w: bad", nodelease.ErrConfig), ipamDel), types.ErrInvalidNetworkConfig,
			[]string{"bad", "ipam DEL failed"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Classify(tt.err).(*types.Error)
			if !ok {
				t.Fatalf("Classify(%v) is not a *types.Error", tt.err)
			}
			if got.Code != tt.code {
				t.Errorf("code %d, want %d (%v)", got.Code, tt.code, got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got.Error(), w) {
					t.Errorf("message %q lacks %q", got.Error(), w)
				}
			}
		})
	}
	if Classify(nil) != nil {
		t.Error("Classify(nil) is not nil")
	}
}
