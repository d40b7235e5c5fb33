package registrytest

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Kind is a kind of registry request. Kinds are bits, so a Rule can name
// several at once (BlobGet|BlobHead); Stats keys are single kinds.
type Kind uint16

// Request kinds, told apart by method and path.
const (
	BlobGet      Kind = 1 << iota // GET /v2/<name>/blobs/<digest>
	BlobHead                      // HEAD /v2/<name>/blobs/<digest>
	UploadPost                    // POST /v2/<name>/blobs/uploads/ (start, mount or monolithic upload)
	UploadPatch                   // PATCH on an upload URL (a chunk)
	UploadPut                     // PUT on an upload URL (completes the upload)
	UploadStatus                  // GET or HEAD on an upload URL (reports the stored range)
	UploadDelete                  // DELETE on an upload URL
	ManifestGet                   // GET /v2/<name>/manifests/<ref>
	ManifestHead                  // HEAD /v2/<name>/manifests/<ref>
	ManifestPut                   // PUT /v2/<name>/manifests/<ref>
	Token                         // GET or POST /token, with WithTokenAuth
	Other                         // anything else: /v2/ ping, tags, catalog, referrers, deletes
)

// AnyKind, the zero Kind, makes a Rule match every request.
const AnyKind Kind = 0

var kindNames = []string{"BlobGet", "BlobHead", "UploadPost", "UploadPatch", "UploadPut",
	"UploadStatus", "UploadDelete", "ManifestGet", "ManifestHead", "ManifestPut", "Token", "Other"}

func (k Kind) String() string {
	if k == AnyKind {
		return "AnyKind"
	}
	var names []string
	for i, name := range kindNames {
		if k&(1<<i) != 0 {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return "Kind(" + strconv.Itoa(int(k)) + ")"
	}
	return strings.Join(names, "|")
}

// Rule selects requests and says what to do to them.
//
// Every rule counts the requests it matches on its own, whatever other
// rules do: it lets the first Skip through, acts on the next Times (0 = on
// all that follow) and is then spent. When several rules act on one request,
// all their actions apply (IgnoreRange with ResetEvery, for instance), except
// that the earliest injected Respond replaces the registry's answer and
// leaves body faults nothing to act on.
type Rule struct {
	Kind   Kind          // request kinds, or'ed; AnyKind matches all
	Repo   string        // repository name; "" matches all
	Digest digest.Digest // digest in the path (blob, manifest) or ?digest= of an upload; "" matches all
	Skip   int           // matching requests to let through first
	Times  int           // matching requests to act on after those; 0 = every one
	Action Action        // the zero Action only counts (see Fault.Applied)
}

// Fault is an injected rule, to inspect or remove.
type Fault struct {
	reg     *Registry
	rule    Rule
	seen    int // guarded by reg.mu
	applied int // guarded by reg.mu
}

// Inject adds a rule. It applies to requests that arrive from now on.
func (r *Registry) Inject(rule Rule) *Fault {
	f := &Fault{reg: r, rule: rule}
	r.mu.Lock()
	r.rules = append(r.rules, f)
	r.mu.Unlock()
	return f
}

// Remove stops the rule from matching and releases the connections its
// stalls hold (they end with a reset). Removing twice is harmless.
func (f *Fault) Remove() {
	r := f.reg
	r.mu.Lock()
	r.rules = slices.DeleteFunc(r.rules, func(g *Fault) bool { return g == f })
	for h := range r.holds {
		if h.fault == f {
			h.free()
		}
	}
	r.mu.Unlock()
}

// Applied returns how many requests the rule has acted on so far.
func (f *Fault) Applied() int {
	f.reg.mu.Lock()
	defer f.reg.mu.Unlock()
	return f.applied
}

// ClearFaults removes every rule and releases every held connection.
func (r *Registry) ClearFaults() {
	r.mu.Lock()
	r.rules = nil
	for h := range r.holds {
		h.free()
	}
	r.mu.Unlock()
}

func (rule *Rule) matches(info reqInfo) bool {
	return (rule.Kind == AnyKind || rule.Kind&info.kind != 0) &&
		(rule.Repo == "" || rule.Repo == info.repo) &&
		(rule.Digest == "" || rule.Digest.String() == info.digest)
}

// arm counts the request against every rule and returns the actions that
// apply to it, in injection order. Spent rules leave the list.
func (r *Registry) arm(info reqInfo) []armed {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []armed
	kept := r.rules[:0]
	for _, f := range r.rules {
		if f.rule.matches(info) {
			f.seen++
			if f.seen > f.rule.Skip {
				f.applied++
				out = append(out, armed{Action: f.rule.Action, fault: f})
			}
		}
		if f.rule.Times == 0 || f.applied < f.rule.Times {
			kept = append(kept, f)
		}
	}
	clear(r.rules[len(kept):])
	r.rules = kept
	return out
}

type armed struct {
	Action
	fault *Fault
}

// Action is what a rule does to a request. Build one with the functions
// below; the With methods only matter for Respond.
//
// Byte offsets count body bytes, not headers. Body faults act on the request
// body when the request carries one (PATCH, PUT and POST uploads, manifest
// PUT) and on the response body otherwise; Truncate acts on responses only.
type Action struct {
	op          op
	n           int64 // offset, period or status code
	rate        int64 // Trickle bytes per second
	delay       time.Duration
	retryAfter  string
	errCode     string
	errMessage  string
	rawBody     bool
	body        []byte
	contentType string
}

type op int

const (
	opNone op = iota
	opResetAfter
	opResetEvery
	opDropResponse
	opStall
	opTrickle
	opCorrupt
	opTruncate
	opIgnoreRange
	opRespond
	opDelay
)

// ResetAfter lets n body bytes through and then resets the TCP connection
// (RST). In a response the n bytes are flushed and acknowledged by the
// client's kernel before the RST, so a client reads exactly n body bytes and
// then ECONNRESET. In a request the registry reads exactly n bytes, its
// handler then sees a broken body and returns -- distribution keeps the bytes
// of a PATCH or PUT in the upload -- and only then is the client reset, so an
// upload status query made after the client sees the reset already reports
// them. If the body is exactly n bytes long the registry never sees its end.
// With WithRealisticCuts a request is cut as on a real network instead: the
// client is reset at once, and the registry gets the bytes in flight and
// the error later.
func ResetAfter(n int64) Action { return Action{op: opResetAfter, n: max(n, 0)} }

// ResetEvery resets a transfer at the next multiple of period in the blob's
// coordinates, strictly after where this request starts: a ranged GET
// starting at 100 MiB with ResetEvery(32 MiB) is reset after 28 MiB, at
// 128 MiB. The start is the response's Content-Range for a 206 (0 for a
// 200) and the request's Content-Range for a PATCH (0 without one, as for the
// PUT of a monolithic upload). So a client that resumes advances by up to
// one period per attempt, and one that restarts from 0 never gets past the
// first. Semantics otherwise as ResetAfter. period < 1 counts as 1.
func ResetEvery(period int64) Action { return Action{op: opResetEvery, n: max(period, 1)} }

// DropResponse lets the registry handle the request completely, then resets
// the connection instead of sending the response: the request took effect
// but the client cannot know (an upload chunk stored, a manifest pushed).
func DropResponse() Action { return Action{op: opDropResponse} }

// Stall lets n body bytes through and then stops: no byte moves, the
// connection stays open. A response stall is held until the client goes
// away; a request stall (the registry stops reading the upload body) cannot
// see the client leave -- its FIN queues behind the unread body -- so it is
// held until the next request for the same upload session arrives, which
// first waits for the stalled handler to finish so it sees the bytes that
// were read. Either is also released by Fault.Remove, ClearFaults or Close.
// Released stalls end with a reset.
func Stall(n int64) Action { return Action{op: opStall, n: max(n, 0)} }

// Trickle lets n body bytes through at full speed and the rest at
// bytesPerSecond, in small flushed pieces (about ten a second). Uploads
// trickle as the registry's reads; the client's kernel buffers absorb a few
// MiB first. bytesPerSecond < 1 counts as 1.
func Trickle(n, bytesPerSecond int64) Action {
	return Action{op: opTrickle, n: max(n, 0), rate: max(bytesPerSecond, 1)}
}

// Corrupt inverts every bit of the byte at blob offset off. For a 206 the
// offset is translated through the response's Content-Range, for a PATCH
// through its Content-Range; a request whose body does not cover off is
// left intact (it still uses up one of the rule's Times).
func Corrupt(off int64) Action { return Action{op: opCorrupt, n: max(off, 0)} }

// Truncate ends a response after n body bytes with a clean close (FIN, or
// TLS close_notify): the client gets a body shorter than its Content-Length
// and reads io.ErrUnexpectedEOF.
func Truncate(n int64) Action { return Action{op: opTruncate, n: max(n, 0)} }

// IgnoreRange removes the Range (and If-Range) header before the registry
// sees the request, like a registry or proxy without range support: a ranged
// blob GET gets 200 and the whole blob.
func IgnoreRange() Action { return Action{op: opIgnoreRange} }

// Delay holds the response for d once the registry (or a Respond) has
// produced it: latency before the first byte, or -- the request having
// passed the auth check already -- time for a token to expire between two
// steps of a push.
func Delay(d time.Duration) Action { return Action{op: opDelay, delay: max(d, 0)} }

// Respond answers with status instead of the registry, with an OCI error
// body whose code fits the status (TOOMANYREQUESTS for 429, UNAVAILABLE for
// 503, DENIED for 403, UNAUTHORIZED for 401 -- with the registry's
// WWW-Authenticate challenge when auth is on --, BLOB_UNKNOWN,
// MANIFEST_UNKNOWN or BLOB_UPLOAD_UNKNOWN for 404, UNKNOWN otherwise). The
// request body is not read. A status outside 100..599 counts as 500.
func Respond(status int) Action {
	if status < 100 || status > 599 {
		status = http.StatusInternalServerError
	}
	return Action{op: opRespond, n: int64(status)}
}

// WithRetryAfter adds "Retry-After: <seconds>" (rounded up) to a Respond.
func (a Action) WithRetryAfter(d time.Duration) Action {
	a.retryAfter = strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
	return a
}

// WithRetryAfterDate adds "Retry-After: <HTTP-date>" to a Respond.
func (a Action) WithRetryAfterDate(t time.Time) Action {
	a.retryAfter = t.UTC().Format(http.TimeFormat)
	return a
}

// WithError sets the OCI error code and message of a Respond's body.
func (a Action) WithError(code, message string) Action {
	a.errCode, a.errMessage = code, message
	return a
}

// WithBody replaces a Respond's OCI error body, e.g. with the HTML page of a
// load balancer; a nil body sends none.
func (a Action) WithBody(contentType string, body []byte) Action {
	a.rawBody, a.contentType, a.body = true, contentType, body
	return a
}

func (a Action) String() string {
	switch a.op {
	case opResetAfter:
		return fmt.Sprintf("ResetAfter(%d)", a.n)
	case opResetEvery:
		return fmt.Sprintf("ResetEvery(%d)", a.n)
	case opDropResponse:
		return "DropResponse()"
	case opStall:
		return fmt.Sprintf("Stall(%d)", a.n)
	case opTrickle:
		return fmt.Sprintf("Trickle(%d, %d)", a.n, a.rate)
	case opCorrupt:
		return fmt.Sprintf("Corrupt(%d)", a.n)
	case opTruncate:
		return fmt.Sprintf("Truncate(%d)", a.n)
	case opIgnoreRange:
		return "IgnoreRange()"
	case opDelay:
		return fmt.Sprintf("Delay(%s)", a.delay)
	case opRespond:
		return fmt.Sprintf("Respond(%d)", a.n)
	}
	return "None"
}

// reqInfo is what rules match on.
type reqInfo struct {
	kind   Kind
	repo   string
	digest string
	upload string // upload session id, for upload URLs
}

// route splits /v2/<name>/<blobs|manifests|tags>/<rest>; the greedy name
// takes repository names with slashes.
var route = regexp.MustCompile(`^/v2/(.+)/(blobs|manifests|tags)/(.*)$`)

// KindOf tells the kind of a registry request by its method and path, as
// rules match it: for a thin handler in front of the registry, or a
// client-side recorder, that needs to know what a request is.
func KindOf(req *http.Request) Kind { return classify(req).kind }

func classify(req *http.Request) reqInfo {
	if req.URL.Path == "/token" {
		return reqInfo{kind: Token}
	}
	m := route.FindStringSubmatch(req.URL.Path)
	if m == nil {
		return reqInfo{kind: Other}
	}
	info := reqInfo{kind: Other, repo: m[1]}
	method, rest := req.Method, m[3]
	switch {
	case m[2] == "blobs" && (rest == "uploads/" || rest == "uploads"):
		info.digest = req.URL.Query().Get("digest")
		if method == http.MethodPost {
			info.kind = UploadPost
		}
	case m[2] == "blobs" && strings.HasPrefix(rest, "uploads/"):
		info.upload = strings.TrimPrefix(rest, "uploads/")
		info.digest = req.URL.Query().Get("digest")
		switch method {
		case http.MethodPatch:
			info.kind = UploadPatch
		case http.MethodPut:
			info.kind = UploadPut
		case http.MethodGet, http.MethodHead:
			info.kind = UploadStatus
		case http.MethodDelete:
			info.kind = UploadDelete
		}
	case m[2] == "blobs":
		info.digest = rest
		switch method {
		case http.MethodGet:
			info.kind = BlobGet
		case http.MethodHead:
			info.kind = BlobHead
		}
	case m[2] == "manifests":
		if _, err := digest.Parse(rest); err == nil {
			info.digest = rest
		}
		switch method {
		case http.MethodGet:
			info.kind = ManifestGet
		case http.MethodHead:
			info.kind = ManifestHead
		case http.MethodPut:
			info.kind = ManifestPut
		}
	}
	return info
}
