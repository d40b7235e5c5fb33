package e2e

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"testing"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
	"github.com/sturdyoci/sturdy/retrypolicy"
	"github.com/sturdyoci/sturdy/transfer"
)

// _state followed by anything but the placeholder: a live upload token.
var liveState = regexp.MustCompile(`_state=[^R&"'\s][^&"'\s]*`)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// net/http's *url.Error quotes a PATCH URL whole, _state included: neither
// Options.Logger nor the Retrying/Failed events may show it.
func TestUploadStateNotLogged(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 2*MiB)
	// One reset mid-PATCH (retried, logged at Warn), then a PATCH that always
	// resets (the blob fails, logged at Error).
	reg.Inject(registrytest.Rule{Kind: registrytest.UploadPatch, Action: registrytest.ResetAfter(64 << 10)})
	log := &lockedBuf{}
	ev := &events{}
	var onRetry []string
	var mu sync.Mutex
	pol := fast(2)
	pol.OnRetry = func(ri retrypolicy.RetryInfo) {
		mu.Lock()
		onRetry = append(onRetry, ri.Err.Error())
		mu.Unlock()
	}
	opts := transfer.Options{Retry: pol, Observer: ev,
		Logger: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	_, err := transfer.Copy(context.Background(), a.store, "v1", repo(t, reg, "secret"), "", opts)
	if err == nil {
		t.Fatal("expected the push to fail")
	}
	if m := liveState.FindString(err.Error()); m != "" {
		t.Errorf("Copy error leaks %s", m)
	}
	if m := liveState.FindString(log.String()); m != "" {
		t.Errorf("Options.Logger output leaks %s", m)
	}
	for _, e := range append(ev.of(progress.Retrying), ev.of(progress.Failed)...) {
		if m := liveState.FindString(fmt.Sprint(e.Err)); m != "" {
			t.Errorf("%s event Err leaks %s", e.Kind, m)
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range onRetry {
		if m := liveState.FindString(s); m != "" {
			t.Errorf("RetryInfo.Err leaks %s", m)
			break
		}
	}
}
