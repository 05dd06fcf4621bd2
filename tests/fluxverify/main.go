// fluxverify: the test oracle for lockstep's SSH-signed commits, read the way Flux reads them.
// It decodes the commit with go-git (as Flux's source-controller does), rebuilds the signed
// payload with go-git's EncodeWithoutSignature, and verifies it with Flux's own verifier,
// github.com/fluxcd/pkg/git's Commit.VerifySSH (namespace "git").
//
//	fluxverify REPO REV AUTHORIZED_KEYS
//
// Prints the verifying key's SHA256 fingerprint and exits 0; exits 1 when the commit does not
// verify, 2 on bad input.
package main

import (
	"fmt"
	"io"
	"os"

	fluxgit "github.com/fluxcd/pkg/git"
	gogit "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: fluxverify REPO REV AUTHORIZED_KEYS")
		os.Exit(2)
	}
	repo, err := gogit.PlainOpen(os.Args[1])
	fail(err, 2)
	hash, err := repo.ResolveRevision(plumbing.Revision(os.Args[2]))
	fail(err, 2)
	commit, err := repo.CommitObject(*hash)
	fail(err, 2)
	keys, err := os.ReadFile(os.Args[3])
	fail(err, 2)
	encoded := &plumbing.MemoryObject{}
	fail(commit.EncodeWithoutSignature(encoded), 2)
	reader, err := encoded.Reader()
	fail(err, 2)
	payload, err := io.ReadAll(reader)
	fail(err, 2)
	c := &fluxgit.Commit{
		Hash:      []byte(commit.Hash.String()),
		Signature: commit.PGPSignature,
		Encoded:   payload,
		Message:   commit.Message,
	}
	fingerprint, err := c.VerifySSH(string(keys))
	fail(err, 1)
	fmt.Println(fingerprint)
}

func fail(err error, code int) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "fluxverify:", err)
		os.Exit(code)
	}
}
