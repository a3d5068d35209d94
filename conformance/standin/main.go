// Stand-in for the programs in critest's upstream test images (nginx, httpd, the
// nonewprivs image's setuid checker), chosen by the name it is run as. Built into the
// busybox-based stand-in images by conformance/critest.sh; only the standard library.
package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
)

func main() {
	switch filepath.Base(os.Args[0]) {
	case "nnp":
		// nonewprivs:1.3 prints the effective uid of its setuid-root binary.
		fmt.Printf("Effective uid: %d\n", os.Geteuid())
	default:
		serve()
	}
}

// serve answers 200 on every path, as critest's nginx/httpd checks need, and writes
// /var/run/nginx.pid as nginx does (the HostPID spec reads it).
func serve() {
	port := "80"
	if len(os.Args) > 1 {
		port = os.Args[1]
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
