// ociregistry: an OCI 1.1 registry that serves the referrers API, for lockstep's tests.
// Debian's docker-registry (Distribution 2.8) and Distribution v3.0 answer
// `GET /v2/NAME/referrers/DIGEST` with 404, so the referrers tests run this:
// go-containerregistry's own registry (pkg/registry, the one cosign's and crane's tests
// use) with its referrers support on, blobs on disk under --dir. One fix on top: a blob upload
// that completes (201) names the blob's `Location`, which the distribution spec requires and
// pkg/registry leaves out (oci-client refuses an upload without it).
//
//	ociregistry --addr 127.0.0.1:PORT --dir DIR
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	dir := flag.String("dir", "", "directory for blobs (default: in memory)")
	flag.Parse()
	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ociregistry: %v\n", err)
		os.Exit(1)
	}
	opts := []registry.Option{
		registry.WithReferrersSupport(true),
		registry.Logger(log.New(os.Stderr, "", log.LstdFlags)),
	}
	if *dir != "" {
		if err := os.MkdirAll(*dir, 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "ociregistry: %v\n", err)
			os.Exit(1)
		}
		opts = append(opts, registry.WithBlobHandler(registry.NewDiskBlobHandler(*dir)))
	}
	fmt.Fprintf(os.Stderr, "ociregistry: listening on %s\n", listener.Addr())
	server := &http.Server{Handler: withBlobLocation(registry.New(opts...)), ReadHeaderTimeout: 10 * time.Second}
	if err := server.Serve(listener); err != nil {
		fmt.Fprintf(os.Stderr, "ociregistry: %v\n", err)
		os.Exit(1)
	}
}

// withBlobLocation adds `Location: /v2/NAME/blobs/DIGEST` to a completed blob upload.
func withBlobLocation(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, _, found := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/blobs/uploads")
		if !found || !strings.HasPrefix(r.URL.Path, "/v2/") {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(&locating{ResponseWriter: w, name: name}, r)
	})
}

type locating struct {
	http.ResponseWriter
	name string
}

func (l *locating) WriteHeader(status int) {
	h := l.Header()
	if digest := h.Get("Docker-Content-Digest"); status == http.StatusCreated && h.Get("Location") == "" && digest != "" {
		h.Set("Location", "/v2/"+l.name+"/blobs/"+digest)
	}
	l.ResponseWriter.WriteHeader(status)
}
