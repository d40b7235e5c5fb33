package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/sturdyoci/sturdy/examples/registrytest"
	"github.com/sturdyoci/sturdy/progress"
)

// Hosted registries' upload quirks, emulated by a thin handler in front of
// the real registry (see the compatibility table in the README).

// Harbor runs distribution v2.8, whose status query runs the same check as
// a PATCH: a _state older than what the session holds (the case after a
// broken PATCH) is answered 416 and the session cancelled. sturdy starts a
// new session from byte 0, with a Note.
func TestQuirkHarborStatus416(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 4*MiB)
	proxy := newThinProxy(t, reg, answerUploadStatus(http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID", "invalid content range"), nil)
	ev := pushWithStatusLie(t, reg, proxy, a, "harbor")
	if len(ev.notesContaining("cannot report an upload's offset")) == 0 {
		t.Fatalf("no Note about the unusable status; notes %q", ev.reasons(progress.Note))
	}
}

// Quay answers the status query with "Range: bytes=0-<count>": one byte
// more than it holds, read as the usual inclusive end. A PATCH from there
// is refused with 416 however often the status is asked: sturdy stops
// trusting the status and starts a new session from byte 0.
func TestQuirkQuayStatusOneByteHigh(t *testing.T) {
	reg := registrytest.New(t)
	a := newArtifact(t, 4*MiB)
	proxy := newThinProxy(t, reg, nil, func(p *thinProxy, resp *http.Response) error {
		if !isUploadStatusGet(resp.Request) {
			return nil
		}
		v := resp.Header.Get("Range")
		_, end, ok := strings.Cut(v, "-")
		n, err := strconv.ParseInt(end, 10, 64)
		if !ok || err != nil || n == 0 {
			return nil
		}
		p.hits.Add(1)
		resp.Header.Set("Range", fmt.Sprintf("bytes=0-%d", n+1))
		return nil
	})
	ev := pushWithStatusLie(t, reg, proxy, a, "quay")
	if len(ev.notesContaining("cannot report an upload's offset")) == 0 {
		t.Fatalf("no Note about the unusable status; notes %q", ev.reasons(progress.Note))
	}
}
