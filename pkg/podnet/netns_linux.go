package podnet

import (
	"errors"
	"fmt"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// ErrNotPodNS marks a CNI_NETNS that cannot be a pod's: not a network
// namespace, or the plugin's own (the node's).
var ErrNotPodNS = errors.New("not a pod network namespace")

// nsGetNSType is the NS_GET_NSTYPE ioctl (linux/nsfs.h).
const nsGetNSType = 0xb703

// OpenNS opens the pod's network namespace at path and refuses
// (ErrNotPodNS) one that is not a network namespace, or that is the caller's
// own (the node's): a pod interface, address and default route must never
// land in the node, nor a DEL delete a node interface, and skel only notices
// after the plugin has run.
func OpenNS(path string) (ns.NetNS, error) {
	podNS, err := ns.GetNS(path)
	if err != nil {
		return nil, err
	}
	if err := checkNS(podNS); err != nil {
		podNS.Close()
		return nil, fmt.Errorf("%w: %s: %w", ErrNotPodNS, path, err)
	}
	return podNS, nil
}

func checkNS(podNS ns.NetNS) error {
	kind, err := unix.IoctlRetInt(int(podNS.Fd()), nsGetNSType)
	switch {
	case errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL):
		// A kernel before 4.11 cannot tell the type; ns.GetNS has checked
		// that the file is a namespace, and the node check below still runs.
	case err != nil:
		return fmt.Errorf("reading namespace type: %w", err)
	case kind != unix.CLONE_NEWNET:
		return errors.New("not a network namespace")
	}
	var pod, self unix.Stat_t
	if err := unix.Fstat(int(podNS.Fd()), &pod); err != nil {
		return err
	}
	// This thread's namespace: /proc/thread-self needs Linux 3.17, the task
	// path fails where /proc belongs to another PID namespace.
	if err := unix.Stat("/proc/thread-self/ns/net", &self); err != nil {
		if err := unix.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), &self); err != nil {
			return err
		}
	}
	if pod.Dev == self.Dev && pod.Ino == self.Ino {
		return errors.New("it is the plugin's own (the node's) network namespace")
	}
	return nil
}
