package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weft-cni/weft/scripts/bench/internal/stats"
)

// daemonProc is a running `weft daemon` and when it was started.
type daemonProc struct {
	cmd *exec.Cmd
	t0  time.Time
}

// daemonOpts are the flags of a command that runs `weft daemon` in a node
// namespace: how to run it and where it serves /readyz.
type daemonOpts struct {
	weft, nsName, addr, subnetFile, logPath string
	port                                    int
}

// addDaemonFlags registers -weft, -netns, -addr, -port (defaulting to
// port), -subnet-file and -log on fs.
func addDaemonFlags(fs *flag.FlagSet, port int) *daemonOpts {
	o := &daemonOpts{}
	fs.StringVar(&o.weft, "weft", "weft", "weft binary")
	fs.StringVar(&o.nsName, "netns", "", "node namespace name (ip netns)")
	fs.StringVar(&o.addr, "addr", "", "node address to serve /readyz on")
	fs.IntVar(&o.port, "port", port, "healthz port")
	fs.StringVar(&o.subnetFile, "subnet-file", "", "the node's subnet file")
	fs.StringVar(&o.logPath, "log", "/dev/null", "daemon log")
	return o
}

// ownNetwork is a network of its own for a daemon: its etcd prefix, the
// node's public IP in it and the bridge its pods would use.
type ownNetwork struct {
	prefix, publicIP, bridge string
}

// args are the daemon's flags for etcd at endpoint, on the default network
// when own is nil and on own otherwise.
func (o *daemonOpts) args(endpoint string, own *ownNetwork) []string {
	args := []string{"--etcd-endpoints=" + endpoint}
	if own != nil {
		args = append(args, "--etcd-prefix="+own.prefix)
	}
	args = append(args, "--iface=eth0")
	if own != nil {
		args = append(args, "--public-ip="+own.publicIP)
	}
	args = append(args, "--subnet-file="+o.subnetFile)
	if own != nil {
		args = append(args, "--bridge="+own.bridge)
	}
	return append(args, "--healthz-ip="+o.addr, fmt.Sprintf("--healthz-port=%d", o.port))
}

// readyURL is the daemon's /readyz.
func (o *daemonOpts) readyURL() string {
	return fmt.Sprintf("http://%s:%d/readyz", o.addr, o.port)
}

// startDaemon runs `ip netns exec NS weft daemon FLAGS…` (ip at ipPath)
// with its output appended to the log; ip execs the daemon in place, so the
// pid is the daemon's.
func startDaemon(ipPath string, o *daemonOpts, flags []string) (*daemonProc, error) {
	logf, err := os.OpenFile(o.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(ipPath, append([]string{"netns", "exec", o.nsName, o.weft, "daemon"}, flags...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &daemonProc{cmd: cmd, t0: t0}, nil
}

// stop sends the daemon SIGTERM and waits for it to exit, killing it if it
// has not within 10 s.
func (d *daemonProc) stop() error {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-done
		return errors.New("daemon did not stop within 10s of SIGTERM; killed")
	}
}

// waitReady polls url every 2 ms until it answers 200 or timeout passes.
func waitReady(url string, t0 time.Time, timeout time.Duration, exited <-chan struct{}) (time.Duration, error) {
	hc := &http.Client{Timeout: 200 * time.Millisecond}
	deadline := t0.Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return 0, errors.New("daemon exited before it was ready")
		default:
		}
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(t0), nil
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s not ready after %s", url, timeout)
}

// rss returns VmRSS and VmHWM of pid in MiB.
func rss(pid int) (float64, float64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return math.NaN(), math.NaN()
	}
	get := func(key string) float64 {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, key+":"); ok {
				f := strings.Fields(v)
				if len(f) > 0 {
					kb, _ := strconv.ParseFloat(f[0], 64)
					return kb / 1024
				}
			}
		}
		return math.NaN()
	}
	return get("VmRSS"), get("VmHWM")
}

// exitedChan is closed once cmd's process is gone, checked every 20 ms.
func exitedChan(cmd *exec.Cmd) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		for {
			if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
				close(ch)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return ch
}

// start measures `weft daemon` start to /readyz 200: a first start that
// acquires a lease, then restarts that find it.
func start(args []string) error {
	fs := flag.NewFlagSet("start", flag.ContinueOnError)
	var endpoint string
	etcdFlag(fs, &endpoint)
	o := addDaemonFlags(fs, 2401)
	runs := fs.Int("runs", 5, "starts: the first acquires the lease, the rest reuse it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *runs < 1 || *runs > 20 {
		return errors.New("-runs must be 1..20")
	}
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		return err
	}
	first, restarts, err := timeStarts(ipPath, o, o.args(endpoint, nil), *runs)
	if err != nil {
		return err
	}
	printStart(first, restarts)
	return nil
}

// timeStarts starts and stops the daemon runs times and returns the ms
// from start to /readyz 200 of the first start and of the restarts.
func timeStarts(ipPath string, o *daemonOpts, flags []string, runs int) (first float64, restarts []float64, err error) {
	url := o.readyURL()
	for i := range runs {
		d, err := startDaemon(ipPath, o, flags)
		if err != nil {
			return 0, nil, err
		}
		el, err := waitReady(url, d.t0, 30*time.Second, exitedChan(d.cmd))
		stopErr := d.stop()
		if err != nil {
			return 0, nil, err
		}
		if stopErr != nil {
			fmt.Fprintf(os.Stderr, "ctlplane start: run %d: %v\n", i, stopErr)
		}
		if i == 0 {
			first = stats.MS(el)
		} else {
			restarts = append(restarts, stats.MS(el))
		}
	}
	return first, restarts, nil
}

// printStart prints the start table on stdout and the summary line on
// stderr.
func printStart(first float64, restarts []float64) {
	fmt.Printf("| daemon start → /readyz 200 | n | p50 ms | max ms |\n|---|---:|---:|---:|\n")
	fmt.Printf("| first start: no subnet file, lease acquired in etcd | 1 | %.1f | %.1f |\n", first, first)
	if len(restarts) > 0 {
		fmt.Printf("| restart: subnet file and lease present | %d | %.1f | %.1f |\n", len(restarts), stats.Percentile(restarts, 50), stats.Percentile(restarts, 100))
	}
	fmt.Fprintf(os.Stderr, "summary first=%.1f restart_p50=%.1f\n", first, stats.Percentile(restarts, 50))
}
