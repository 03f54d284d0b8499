// Command addpath shows where the time of a pod ADD and DEL goes, per CNI
// side, with little overhead: it records kernel tracepoints with `perf
// record -a` (process fork, exec and exit; enter and exit of fsync,
// fdatasync, flock and the socket calls netlink uses) while it runs, per
// side, R serial ADDs and DELs through cnitool and then R ADDs and DELs with
// P at a time, and splits each call:
//
//	cnitool itself (its start, config loading, result cache)
//	the plugin process (weft, or bridge), of which
//	  child processes it waits for (iptables, host-local, …), fork to exit
//	  waiting for file locks: first flock attempt to the successful one
//	  fsync and fdatasync
//	  netlink: sendto/recvfrom/sendmsg/recvmsg (the kernel does rtnetlink
//	  requests synchronously inside these calls)
//	  the rest: Go runtime start and package init, Go code, scheduling
//
// It also times each plugin binary's VERSION call (process start floor) and
// sums its package init time (GODEBUG=inittrace=1).
//
// A side is NAME=NODE_NETNS,CNI_PATH,NETCONF_DIR,NETWORK,POD_NETNS_PREFIX as
// for podsetup; pods PREFIX000 … must exist with nothing attached.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

type side struct {
	Name, NodeNS, CNIPath, ConfDir, Network, PodPrefix string
}

type sides []side

func (s *sides) String() string { return fmt.Sprint(*s) }
func (s *sides) Set(v string) error {
	name, rest, ok := strings.Cut(v, "=")
	f := strings.Split(rest, ",")
	if !ok || len(f) != 5 {
		return fmt.Errorf("side %q: want NAME=NODE_NETNS,CNI_PATH,NETCONF_DIR,NETWORK,POD_NETNS_PREFIX", v)
	}
	*s = append(*s, side{name, f[0], f[1], f[2], f[3], f[4]})
	return nil
}

// call runs cnitool in the side's node namespace and returns its pid.
func call(cnitool string, sd side, verb, pod string) (int, time.Duration, error) {
	var (
		pid     int
		el      time.Duration
		callErr error
	)
	err := ns.WithNetNSPath(sd.NodeNS, func(ns.NetNS) error {
		var out bytes.Buffer
		cmd := exec.Command(cnitool, verb, sd.Network, pod)
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "CNI_PATH=" + sd.CNIPath, "NETCONFPATH=" + sd.ConfDir}
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		if err := cmd.Start(); err != nil {
			callErr = err
			return nil
		}
		pid = cmd.Process.Pid
		timer := time.AfterFunc(60*time.Second, func() { _ = cmd.Process.Kill() })
		defer timer.Stop()
		if err := cmd.Wait(); err != nil {
			callErr = fmt.Errorf("cnitool %s %s %s: %w: %s", verb, sd.Network, pod, err, out.String())
		}
		el = time.Since(start)
		return nil
	})
	return pid, el, errors.Join(err, callErr)
}

// --- perf script parsing ---

type proc struct {
	pid, parent     int
	name            string
	fork, exec, end float64 // seconds; 0 when not seen
	fsync, netlink  float64 // seconds inside those syscalls
	lockWait        float64 // seconds from first attempt to success, summed over locks taken
	fsyncN, nlN     int
	lockTries       map[string]float64 // fd -> time of the first pending attempt
}

type trace struct {
	procs   map[int]*proc
	enter   map[int]float64 // tid -> time of the pending syscall enter
	lockFD  map[int]string  // tid -> fd of its pending flock
	threads map[int]int     // tid -> tgid
}

// A perf script line: "comm  PID/TID  TIME: EVENT: ARGS" (comm may hold spaces).
var lineRE = regexp.MustCompile(`\s(\d+)/(\d+)\s+(\d+\.\d+):\s+(\S+):\s?(.*)$`)

func (t *trace) get(pid int) *proc {
	p := t.procs[pid]
	if p == nil {
		p = &proc{pid: pid, lockTries: map[string]float64{}}
		t.procs[pid] = p
	}
	return p
}

// field returns the value of "key=value" or "key: value" in a tracepoint's text.
func field(args, key string) string {
	i := strings.Index(args, key+"=")
	n := len(key) + 1
	if i < 0 {
		if i = strings.Index(args, key+": "); i < 0 {
			return ""
		}
		n = len(key) + 2
	}
	v := args[i+n:]
	if j := strings.IndexAny(v, " ,"); j >= 0 {
		v = v[:j]
	}
	return v
}

func parseTrace(r *bufio.Scanner) *trace {
	t := &trace{procs: map[int]*proc{}, enter: map[int]float64{}, lockFD: map[int]string{}, threads: map[int]int{}}
	for r.Scan() {
		m := lineRE.FindStringSubmatch(r.Text())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		tid, _ := strconv.Atoi(m[2])
		ts, _ := strconv.ParseFloat(m[3], 64)
		ev, args := m[4], m[5]
		t.threads[tid] = pid
		switch {
		case ev == "sched:sched_process_fork":
			child, _ := strconv.Atoi(field(args, "child_pid"))
			c := t.get(child)
			c.fork, c.parent = ts, pid
		case ev == "sched:sched_process_exec":
			p := t.get(pid)
			p.exec, p.name = ts, filepath.Base(field(args, "filename"))
		case ev == "sched:sched_process_exit":
			if field(args, "group_dead") == "true" {
				t.get(pid).end = ts
			}
		case ev == "syscalls:sys_enter_flock":
			c, _ := strconv.ParseUint(strings.TrimPrefix(field(args, "cmd"), "0x"), 16, 64)
			if c&(syscall.LOCK_EX|syscall.LOCK_SH) == 0 {
				continue // an unlock
			}
			fd := field(args, "fd")
			t.lockFD[tid] = fd
			p := t.get(pid)
			if _, pending := p.lockTries[fd]; !pending {
				p.lockTries[fd] = ts
			}
		case ev == "syscalls:sys_exit_flock":
			fd, ok := t.lockFD[tid]
			if !ok {
				continue
			}
			delete(t.lockFD, tid)
			if strings.TrimSpace(args) != "0x0" {
				continue // EWOULDBLOCK: the attempt stays pending
			}
			p := t.get(pid)
			p.lockWait += ts - p.lockTries[fd]
			delete(p.lockTries, fd)
		case strings.HasPrefix(ev, "syscalls:sys_enter_"):
			t.enter[tid] = ts
		case strings.HasPrefix(ev, "syscalls:sys_exit_"):
			start, ok := t.enter[tid]
			if !ok {
				continue
			}
			delete(t.enter, tid)
			p := t.get(pid)
			switch name := strings.TrimPrefix(ev, "syscalls:sys_exit_"); name {
			case "fsync", "fdatasync":
				p.fsync += ts - start
				p.fsyncN++
			default:
				p.netlink += ts - start
				p.nlN++
			}
		}
	}
	return t
}

// children are the processes (not threads) forked by pid, in fork order.
func (t *trace) children(pid int) []*proc {
	var out []*proc
	for _, p := range t.procs {
		if p.parent == pid && p.pid != pid && p.end > 0 && t.threads[p.pid] == p.pid {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b *proc) int { return cmp.Compare(a.fork, b.fork) })
	return out
}

// --- breakdown of one call ---

// Row keys, in the order printed.
const (
	rowTotal   = "cnitool exec to exit"
	rowCNITool = "cnitool itself (start, config, result cache, fork, exec and reaping of the plugin)"
	rowPlugin  = "plugin process, exec to exit"
	rowLock    = "&nbsp;&nbsp;waiting for file locks (first flock attempt to success)"
	rowFsync   = "&nbsp;&nbsp;fsync, fdatasync"
	rowNetlink = "&nbsp;&nbsp;netlink syscalls"
	rowRest    = "&nbsp;&nbsp;rest: process start, Go runtime and init, Go code, scheduling"
	rowStart   = "&nbsp;&nbsp;&nbsp;&nbsp;of which about: process start and init (VERSION call)"
	childRow   = "&nbsp;&nbsp;child process: "
)

type breakdown struct {
	plugin string
	ms     map[string]float64
	counts map[string]int
}

func (t *trace) breakdown(cpid int) (*breakdown, error) {
	c := t.procs[cpid]
	if c == nil || c.exec == 0 || c.end == 0 {
		return nil, fmt.Errorf("cnitool pid %d not in the trace", cpid)
	}
	var plugin *proc
	for _, p := range t.children(cpid) {
		if p.exec > 0 {
			plugin = p
			break
		}
	}
	if plugin == nil {
		return nil, fmt.Errorf("cnitool pid %d ran no plugin", cpid)
	}
	b := &breakdown{plugin: plugin.name, ms: map[string]float64{}, counts: map[string]int{}}
	total := (c.end - c.exec) * 1000
	life := (plugin.end - plugin.exec) * 1000
	b.ms[rowTotal] = total
	b.ms[rowCNITool] = total - life
	b.ms[rowPlugin] = life
	rest := life
	for _, ch := range t.children(plugin.pid) {
		name := ch.name
		if ch.exec == 0 {
			name = "fork without exec (Go's pidfd probe)"
		}
		ms := (ch.end - ch.fork) * 1000
		b.ms[childRow+name] += ms
		b.counts[childRow+name]++
		rest -= ms
	}
	b.ms[rowLock] = plugin.lockWait * 1000
	b.ms[rowFsync], b.counts[rowFsync] = plugin.fsync*1000, plugin.fsyncN
	b.ms[rowNetlink], b.counts[rowNetlink] = plugin.netlink*1000, plugin.nlN
	b.ms[rowRest] = rest - (plugin.lockWait+plugin.fsync+plugin.netlink)*1000
	return b, nil
}

// --- VERSION floor ---

func versionFloor(bin string, n int) (float64, float64, error) {
	var xs []float64
	for range n {
		cmd := exec.Command(bin)
		cmd.Env = []string{"CNI_COMMAND=VERSION"}
		start := time.Now()
		if err := cmd.Run(); err != nil {
			return 0, 0, fmt.Errorf("%s VERSION: %w", bin, err)
		}
		xs = append(xs, float64(time.Since(start).Microseconds())/1000)
	}
	var inits []float64
	for range 5 {
		cmd := exec.Command(bin)
		cmd.Env = []string{"CNI_COMMAND=VERSION", "GODEBUG=inittrace=1"}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		_ = cmd.Run()
		sum := 0.0
		for _, l := range strings.Split(stderr.String(), "\n") {
			// init pkg @0.5 ms, 0.012 ms clock, 0 bytes, 0 allocs
			f := strings.Fields(l)
			if len(f) >= 7 && f[0] == "init" && f[6] == "clock," {
				v, _ := strconv.ParseFloat(f[4], 64)
				sum += v
			}
		}
		inits = append(inits, sum)
	}
	init := median(inits)
	return median(xs), init, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// --- running the calls under perf ---

type callRec struct {
	side, mode, verb string
	pid              int
	wall             time.Duration
}

func record(perf, data string) (*exec.Cmd, *bytes.Buffer, error) {
	args := []string{"record", "-a", "-q", "-o", data}
	for _, e := range []string{"sched:sched_process_fork", "sched:sched_process_exec", "sched:sched_process_exit"} {
		args = append(args, "-e", e)
	}
	for _, sc := range []string{"fsync", "fdatasync", "flock", "sendto", "recvfrom", "sendmsg", "recvmsg"} {
		args = append(args, "-e", "syscalls:sys_enter_"+sc, "-e", "syscalls:sys_exit_"+sc)
	}
	// perf ends on its own when the workload does, even if we die.
	args = append(args, "--", "sleep", "120")
	rec := exec.Command(perf, args...)
	var out bytes.Buffer
	rec.Stdout, rec.Stderr = &out, &out
	if err := rec.Start(); err != nil {
		return nil, nil, fmt.Errorf("perf record: %w", err)
	}
	// Wait until perf has its events set up (it writes the header first).
	for i := 0; i < 100; i++ {
		if st, err := os.Stat(data); err == nil && st.Size() > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	return rec, &out, nil
}

type runner struct {
	cnitool string
	runs    int
	par     int
	mu      sync.Mutex
	calls   []callRec
}

func (r *runner) serial(sd side, verb string) error {
	for i := range r.runs {
		pid, el, err := call(r.cnitool, sd, verb, fmt.Sprintf("%s%03d", sd.PodPrefix, i))
		if err != nil {
			return err
		}
		r.calls = append(r.calls, callRec{sd.Name, "serial", verb, pid, el})
	}
	return nil
}

func (r *runner) parallel(sd side, verb string) error {
	next := make(chan int)
	var wg sync.WaitGroup
	var errs []error
	for range r.par {
		wg.Go(func() {
			for i := range next {
				pid, el, err := call(r.cnitool, sd, verb, fmt.Sprintf("%s%03d", sd.PodPrefix, i))
				r.mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					r.calls = append(r.calls, callRec{sd.Name, "parallel", verb, pid, el})
				}
				r.mu.Unlock()
			}
		})
	}
	for i := range r.runs {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

func (r *runner) all(ss sides) error {
	for _, sd := range ss {
		for _, verb := range []string{"add", "del"} {
			if err := r.serial(sd, verb); err != nil {
				return err
			}
		}
	}
	for _, sd := range ss {
		for _, verb := range []string{"add", "del"} {
			if err := r.parallel(sd, verb); err != nil {
				return err
			}
		}
	}
	return nil
}

func main() {
	var (
		ss      sides
		perf    = flag.String("perf", "perf", "perf binary")
		cnitool = flag.String("cnitool", "cnitool", "cnitool binary")
		runs    = flag.Int("runs", 20, "ADDs (then DELs) per side and mode")
		par     = flag.Int("par", 20, "calls at a time in the parallel mode")
		dir     = flag.String("dir", os.TempDir(), "where perf.data goes")
		plugins = flag.String("plugins", "", "comma-separated plugin binaries to time VERSION of")
		empty   = flag.String("empty", "", "an empty Go program (one of -plugins): its start is the floor's")
		kruns   = flag.Int("kernel-runs", 30, "veth pairs made and deleted with no plugin, for the floor (0: none)")
	)
	flag.Var(&ss, "side", "NAME=NODE_NETNS,CNI_PATH,NETCONF_DIR,NETWORK,POD_NETNS_PREFIX (repeat)")
	flag.Parse()
	if len(ss) == 0 || *runs < 1 || *runs > 100 || *par < 1 {
		fmt.Fprintln(os.Stderr, "addpath: need -side, 1 <= -runs <= 100, -par >= 1")
		os.Exit(2)
	}
	data := filepath.Join(*dir, "perf.data")
	rec, perfOut, err := record(*perf, data)
	if err != nil {
		fmt.Fprintf(os.Stderr, "addpath: %v\n", err)
		os.Exit(1)
	}
	r := &runner{cnitool: *cnitool, runs: *runs, par: min(*par, *runs)}
	runErr := r.all(ss)
	time.Sleep(200 * time.Millisecond)
	_ = rec.Process.Signal(syscall.SIGINT)
	_ = rec.Wait()
	if runErr != nil {
		fmt.Fprintf(os.Stderr, "addpath: %v\n", runErr)
		os.Exit(1)
	}
	script := exec.Command(*perf, "script", "-i", data, "-F", "comm,pid,tid,time,event,trace", "--ns")
	out, err := script.StdoutPipe()
	if err == nil {
		err = script.Start()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "addpath: perf script: %v (perf record said: %s)\n", err, perfOut.String())
		os.Exit(1)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	t := parseTrace(sc)
	_ = script.Wait()

	floors := map[string]float64{}
	var startTable strings.Builder
	if *plugins != "" {
		fmt.Fprintf(&startTable, "Process start floor: each binary run with `CNI_COMMAND=VERSION` (median of 30: fork, exec, Go runtime\nstart, package init, exit), and the sum of its package init times (`GODEBUG=inittrace=1`, median of 5).\n\n")
		fmt.Fprintf(&startTable, "| binary | size MiB | VERSION call ms | package init ms |\n|---|---:|---:|---:|\n")
		for _, b := range strings.Split(*plugins, ",") {
			wall, init, err := versionFloor(b, 30)
			if err != nil {
				fmt.Fprintf(os.Stderr, "addpath: %v\n", err)
				continue
			}
			floors[filepath.Base(b)] = wall
			size := 0.0
			if st, err := os.Stat(b); err == nil {
				size = float64(st.Size()) / (1 << 20)
			}
			fmt.Fprintf(&startTable, "| %s | %.1f | %.2f | %.2f |\n", filepath.Base(b), size, wall, init)
		}
	}
	for _, mode := range []string{"serial", "parallel"} {
		for _, verb := range []string{"add", "del"} {
			report(t, r.calls, ss, mode, verb, r.par, floors)
		}
	}
	fmt.Println(startTable.String())
	if *kruns > 0 && *empty != "" {
		kAdd, kDel, err := kernelFloor(*kruns)
		if err != nil {
			fmt.Fprintf(os.Stderr, "addpath: %v\n", err)
			os.Exit(1)
		}
		fmt.Println(floorSummary(t, r.calls, ss, floors[filepath.Base(*empty)], kAdd, kDel, *kruns))
	}
}

// col is one side's calls of a mode and verb: their split summed over the
// calls traced, and the driver's wall times.
type col struct {
	plugin string
	n, bad int
	sum    map[string]float64
	counts map[string]int
	walls  []float64
}

// mean is the mean per call of row; ok is false when nothing was traced.
func (c *col) mean(row string) (float64, bool) {
	v, ok := c.sum[row]
	if c.n == 0 || !ok {
		return 0, false
	}
	return v / float64(c.n), true
}

// collect splits the side's calls of mode and verb.
func collect(t *trace, calls []callRec, sd side, mode, verb string) *col {
	c := &col{sum: map[string]float64{}, counts: map[string]int{}}
	for _, rec := range calls {
		if rec.side != sd.Name || rec.mode != mode || rec.verb != verb {
			continue
		}
		b, err := t.breakdown(rec.pid)
		if err != nil {
			c.bad++
			continue
		}
		c.n++
		c.plugin = b.plugin
		c.walls = append(c.walls, float64(rec.wall.Microseconds())/1000)
		for key, v := range b.ms {
			c.sum[key] += v
		}
		for key, v := range b.counts {
			c.counts[key] += v
		}
	}
	return c
}

// report prints one table: the mean split of a mode and verb, a column per side.
func report(t *trace, calls []callRec, ss sides, mode, verb string, par int, floors map[string]float64) {
	cols := make([]*col, len(ss))
	children := map[string]bool{}
	for k, sd := range ss {
		cols[k] = collect(t, calls, sd, mode, verb)
		for key := range cols[k].sum {
			if strings.HasPrefix(key, childRow) {
				children[key] = true
			}
		}
	}
	how := "one at a time"
	if mode == "parallel" {
		how = fmt.Sprintf("%d at a time", par)
	}
	fmt.Printf("**%s, %s**: mean ms per call (calls per call in brackets)\n\n| part |", strings.ToUpper(verb), how)
	sep := "|---|"
	for k, sd := range ss {
		fmt.Printf(" %s (%s) |", sd.Name, cols[k].plugin)
		sep += "---:|"
	}
	fmt.Printf("\n%s\n", sep)
	rows := []string{rowTotal, rowCNITool, rowPlugin}
	childKeys := make([]string, 0, len(children))
	for key := range children {
		childKeys = append(childKeys, key)
	}
	slices.Sort(childKeys)
	rows = append(rows, childKeys...)
	rows = append(rows, rowLock, rowFsync, rowNetlink, rowRest, rowStart)
	for _, row := range rows {
		fmt.Printf("| %s |", row)
		for _, c := range cols {
			if c.n == 0 {
				fmt.Printf(" - |")
				continue
			}
			v, present := c.mean(row)
			if row == rowStart {
				v, present = floors[c.plugin]
			}
			switch {
			case !present || (v < 0.005 && row != rowTotal):
				fmt.Printf(" - |")
			case c.counts[row] > 0:
				fmt.Printf(" %.2f (%.1f) |", v, float64(c.counts[row])/float64(c.n))
			default:
				fmt.Printf(" %.2f |", v)
			}
		}
		fmt.Println()
	}
	fmt.Printf("| calls traced (driver wall p50 ms) |")
	for _, c := range cols {
		fmt.Printf(" %d (%.1f) |", c.n, median(c.walls))
	}
	fmt.Printf("\n\n")
}
