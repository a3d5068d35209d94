// Stand-in for the programs in critest's upstream test images (nginx, httpd, the
// nonewprivs image's setuid checker; `ipcs -m` and `pgrep NAME`, which Debian's
// busybox lacks), chosen by the name it is run as. Built into the
// busybox-based stand-in images by conformance/critest.sh; only the standard library.
package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

func main() {
	switch filepath.Base(os.Args[0]) {
	case "nnp":
		// nonewprivs:1.3 prints the effective uid of its setuid-root binary.
		fmt.Printf("Effective uid: %d\n", os.Geteuid())
	case "ipcs":
		ipcs()
	case "pgrep":
		pgrep()
	case "httpd":
		// The httpd image's log line that critest's multi-container spec looks for.
		fmt.Fprintf(os.Stderr, "AH00094: Command line: '%s'\n", strings.Join(os.Args, " "))
		serve("80")
	default:
		serve(os.Getenv("PORT"))
	}
}

// serve answers 200 on every path, as critest's nginx/httpd checks need, and writes
// /var/run/nginx.pid as nginx does (the HostPID spec reads it).
func serve(port string) {
	if port == "" {
		port = "80"
	}
	_ = os.MkdirAll("/var/run", 0o755)
	_ = os.WriteFile("/var/run/nginx.pid", []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "<h1>Welcome to nginx!</h1>")
	})
	if err := http.ListenAndServe(":"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// ipcs prints the System V shared memory segments of the caller's IPC namespace as
// `ipcs -m` does (key, shmid, owner uid, perms, bytes, nattch).
func ipcs() {
	fmt.Println("------ Shared Memory Segments --------")
	fmt.Println("key        shmid      owner      perms      bytes      nattch")
	data, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		key, _ := strconv.ParseInt(f[0], 10, 64)
		fmt.Printf("0x%08x %-10s %-10s %-10s %-10s %-10s\n", uint32(key), f[1], f[7], f[2], f[3], f[6])
	}
}

// pgrep prints the pids whose command name matches the pattern; exit 1 when none does.
func pgrep() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: pgrep PATTERN")
		os.Exit(2)
	}
	re, err := regexp.Compile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	found := false
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err == nil && re.MatchString(strings.TrimSpace(string(comm))) {
			fmt.Println(e.Name())
			found = true
		}
	}
	if !found {
		os.Exit(1)
	}
}
