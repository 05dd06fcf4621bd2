// k8sread reads Kubernetes manifests exactly the way kubectl does, with kubectl's own code
// (k8s.io/cli-runtime's resource builder: apimachinery's YAML-or-JSON decoder, the
// unstructured JSON scheme, List flattening), and prints the objects it read. It is the
// test oracle for lockstep's manifest reader: whatever lockstep accepts must be exactly
// what this prints.
//
//	k8sread [-R] PATH...   read files/directories like `kubectl apply -f PATH [-R]`
//	k8sread -stream        read stdin as one file (like `kubectl apply -f -`)
//	k8sread -batch         many inputs in one process: on stdin, repeated
//	                       "<decimal byte length>\n<bytes>"; on stdout, one JSON line per
//	                       input: {"objects":[{"source":..,"object":..},..]} or {"error":".."}
//
// Without -batch: one JSON line per object, {"source": FILE, "object": OBJECT}, in
// kubectl's order; on failure, kubectl's error on stderr and exit status 1.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/resource"
)

// Read is one object as kubectl read it.
type Read struct {
	Source string          `json:"source"`
	Object json.RawMessage `json:"object"`
}

// builder is the builder `kubectl apply -f` uses (cmd/apply/apply.go GetObjects), minus
// what needs a cluster (schema validation, REST mappings, namespace defaulting).
func builder() *resource.Builder {
	return resource.NewLocalBuilder().Unstructured().ContinueOnError()
}

func collect(r *resource.Result) ([]Read, error) {
	infos, err := r.Infos()
	if err != nil {
		return nil, err
	}
	out := make([]Read, 0, len(infos))
	for _, info := range infos {
		u, ok := info.Object.(*unstructured.Unstructured)
		if !ok {
			return nil, fmt.Errorf("k8sread: %s: unexpected object type %T", info.Source, info.Object)
		}
		raw, err := u.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("k8sread: %s: %v", info.Source, err)
		}
		out = append(out, Read{Source: info.Source, Object: raw})
	}
	return out, nil
}

func readPaths(paths []string, recursive bool) ([]Read, error) {
	opts := &resource.FilenameOptions{Filenames: paths, Recursive: recursive}
	return collect(builder().FilenameParam(false, opts).Flatten().Do())
}

func readStream(r io.Reader, name string) ([]Read, error) {
	return collect(builder().Stream(r, name).Flatten().Do())
}

// safely turns a panic inside the decoder into an error, so one input cannot end a batch.
func safely(f func() ([]Read, error)) (reads []Read, err error) {
	defer func() {
		if p := recover(); p != nil {
			reads, err = nil, fmt.Errorf("k8sread: panic: %v", p)
		}
	}()
	return f()
}

func batch(in *bufio.Reader, out *bufio.Writer) error {
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	for {
		line, err := in.ReadString('\n')
		if errors.Is(err, io.EOF) && line == "" {
			return nil
		}
		if err != nil {
			return fmt.Errorf("k8sread: batch header: %v", err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(line))
		if err != nil || n < 0 {
			return fmt.Errorf("k8sread: batch header %q is not a length", line)
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(in, body); err != nil {
			return fmt.Errorf("k8sread: batch body: %v", err)
		}
		reads, err := safely(func() ([]Read, error) {
			return readStream(bytes.NewReader(body), "STDIN")
		})
		var res any
		if err != nil {
			res = struct {
				Error string `json:"error"`
			}{err.Error()}
		} else {
			if reads == nil {
				reads = []Read{}
			}
			res = struct {
				Objects []Read `json:"objects"`
			}{reads}
		}
		if err := enc.Encode(&res); err != nil {
			return err
		}
		if err := out.Flush(); err != nil {
			return err
		}
	}
}

func main() {
	recursive := flag.Bool("R", false, "process directories recursively, like kubectl -R")
	stream := flag.Bool("stream", false, "read stdin as one file")
	batchMode := flag.Bool("batch", false, "read length-prefixed inputs on stdin, one JSON result line each")
	flag.Parse()

	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	if *batchMode {
		if err := batch(bufio.NewReader(os.Stdin), out); err != nil {
			out.Flush()
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		return
	}
	var reads []Read
	var err error
	switch {
	case *stream:
		reads, err = readStream(os.Stdin, "STDIN")
	case flag.NArg() > 0:
		reads, err = readPaths(flag.Args(), *recursive)
	default:
		fmt.Fprintln(os.Stderr, "usage: k8sread [-R] PATH... | -stream | -batch")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	for _, r := range reads {
		if err := enc.Encode(&r); err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
	}
}
