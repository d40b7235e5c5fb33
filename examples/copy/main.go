package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/sturdyoci/sturdy/examples/internal/ui"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
	"github.com/sturdyoci/sturdy/transfer"
)

const usage = `usage: copy [flags] SRC DST

SRC and DST are registry references (host/repo:tag, host/repo@sha256:...)
or OCI layouts on disk (oci-layout:PATH, oci-layout:PATH:tag,
oci-layout:PATH@sha256:...). Without a tag or digest DST takes SRC's.
Credentials come from the Docker config (~/.docker/config.json, $DOCKER_CONFIG).

flags:
`

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // the copy failed
	exitUsage  = 2 // bad arguments; nothing was copied
)

// options are the flags.
type options struct {
	plainHTTP      bool
	concurrency    int
	stallTimeout   time.Duration
	maxAttempts    int
	initialBackoff time.Duration
	registryConfig string
	stateDir       string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole program, returning its exit code; tests call it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, pos, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "copy:", err)
		return exitUsage
	}

	// Our own transport, so that its idle connections can be closed when
	// the copy is done (a program embedding the copy must not leak them).
	transport := http.DefaultTransport.(*http.Transport).Clone()
	defer transport.CloseIdleConnections()
	creds, err := credentialStore(opts.registryConfig)
	if err != nil {
		fmt.Fprintln(stderr, "copy: credentials:", err)
		return exitUsage
	}
	// transfer.NewClient has no retrying transport underneath: sturdy's
	// per-blob loop is the only retry layer.
	client := transfer.NewClient(&http.Client{Transport: transport}, credentials.Credential(creds))

	src, err := openEndpoint(pos[0], true, client, opts.plainHTTP)
	if err == nil && src.ref == "" {
		err = errNoRef
	}
	if err != nil {
		fmt.Fprintln(stderr, "copy: source:", err)
		return exitUsage
	}
	dst, err := openEndpoint(pos[1], false, client, opts.plainHTTP)
	if err != nil {
		fmt.Fprintln(stderr, "copy: destination:", err)
		return exitUsage
	}

	fmt.Fprintf(stdout, "copy %s -> %s\n", src.name, dst.name)
	tracker := progress.NewTracker()
	display := ui.New(stdout, "copy")
	start := time.Now()
	root, err := copyArtifact(ctx, src, dst, opts.transferOptions(progress.Multi(tracker, display)))
	display.Close()

	fmt.Fprintln(stdout)
	for _, line := range strings.Split(tracker.Summary().String(), "\n") {
		fmt.Fprintln(stdout, "  "+line)
	}
	if err != nil {
		fmt.Fprintf(stderr, "copy failed after %s: %v\n", ui.Duration(time.Since(start)), err)
		return exitFailed
	}
	fmt.Fprintf(stdout, "copied %s in %s\n", root.Digest, ui.Duration(time.Since(start)))
	return exitOK
}

// parseArgs reads flags before, between and after the two positional
// arguments, as people type them.
func parseArgs(args []string, errOut io.Writer) (options, []string, error) {
	var o options
	fs := flag.NewFlagSet("copy", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.Usage = func() {
		fmt.Fprint(errOut, usage)
		fs.PrintDefaults()
	}
	fs.BoolVar(&o.plainHTTP, "plain-http", false, "talk HTTP, not HTTPS, to the registries")
	fs.IntVar(&o.concurrency, "concurrency", transfer.DefaultConcurrency, "blobs moved at once")
	fs.DurationVar(&o.stallTimeout, "stall-timeout", transfer.DefaultStallTimeout, "retry an attempt that moved no byte for this long")
	fs.IntVar(&o.maxAttempts, "max-attempts", retrypolicy.DefaultMaxAttempts, "attempts per blob without progress, the first included (1 = no retry)")
	fs.DurationVar(&o.initialBackoff, "initial-backoff", retrypolicy.DefaultInitialBackoff, "wait after a blob's first failure; doubles up to 2m")
	fs.StringVar(&o.registryConfig, "registry-config", "", "Docker config file with credentials (default: Docker's own)")
	fs.StringVar(&o.stateDir, "state-dir", "", "keep what a killed or interrupted copy received here, and continue from it when run again (up to the size of the blobs in flight on disk)")

	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return o, nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch {
	case len(pos) != 2:
		return o, nil, fmt.Errorf("want SRC and DST, got %d argument(s); -h for help", len(pos))
	case o.concurrency < 1 || o.maxAttempts < 1:
		return o, nil, errors.New("--concurrency and --max-attempts must be at least 1")
	case o.stallTimeout <= 0 || o.initialBackoff <= 0:
		return o, nil, errors.New("--stall-timeout and --initial-backoff must be positive")
	}
	return o, pos, nil
}

func (o options) transferOptions(obs progress.Observer) transfer.Options {
	return transfer.Options{
		Retry:        retrypolicy.Config{MaxAttempts: o.maxAttempts, InitialBackoff: o.initialBackoff},
		Concurrency:  o.concurrency,
		StallTimeout: o.stallTimeout,
		Observer:     obs,
		StateDir:     o.stateDir,
	}
}

// credentialStore reads the Docker config at path, or Docker's own.
func credentialStore(path string) (credentials.Store, error) {
	opts := credentials.StoreOptions{}
	if path != "" {
		return credentials.NewStore(path, opts)
	}
	return credentials.NewStoreFromDocker(opts)
}

// copyArtifact copies src's artifact to dst. A tag (given, or taken from
// a tagged source) is pushed with transfer.Copy; a digest names content
// and nothing is tagged, so the graph is copied with transfer.CopyGraph.
func copyArtifact(ctx context.Context, src, dst endpoint, opts transfer.Options) (ocispec.Descriptor, error) {
	dstRef := dst.ref
	if dstRef == "" {
		dstRef = src.ref
	}
	if !isDigest(dstRef) {
		return transfer.Copy(ctx, src.target, src.ref, dst.target, dstRef, opts)
	}
	var root ocispec.Descriptor
	err := retrypolicy.Do(ctx, retrypolicy.Config{MaxAttempts: opts.Retry.MaxAttempts, InitialBackoff: opts.Retry.InitialBackoff}, 0,
		func(ctx context.Context) error {
			var err error
			root, err = src.target.Resolve(ctx, src.ref)
			return err
		})
	if err != nil {
		return root, fmt.Errorf("resolve %s: %w", src.ref, err)
	}
	if root.Digest.String() != dstRef {
		return root, fmt.Errorf("the source is %s, the destination names %s", root.Digest, dstRef)
	}
	return root, transfer.CopyGraph(ctx, src.target, dst.target, root, opts)
}
