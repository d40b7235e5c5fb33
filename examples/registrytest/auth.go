package registrytest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// authenticator guards /v2/ with Basic credentials or with bearer tokens
// from its own token endpoint, the two schemes registries use.
type authenticator struct {
	user, pass string
	bearer     bool
	ttl        time.Duration // token lifetime; <= 0 never expires
	realm      string        // token endpoint URL

	mu     sync.Mutex
	tokens map[string]time.Time // token -> expiry
}

func newTokenAuth(user, pass string, ttl time.Duration, realm string) *authenticator {
	return &authenticator{user: user, pass: pass, bearer: true, ttl: ttl, realm: realm, tokens: map[string]time.Time{}}
}

func newBasicAuth(user, pass string) *authenticator {
	return &authenticator{user: user, pass: pass}
}

// wrap puts the check in front of the registry. Only /v2/ is guarded; the
// token endpoint is served here.
func (a *authenticator) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch {
		case a.bearer && req.URL.Path == "/token":
			a.serveToken(w, req)
		case !strings.HasPrefix(req.URL.Path, "/v2"), a.allowed(req):
			next.ServeHTTP(w, req)
		default:
			w.Header().Set("WWW-Authenticate", a.challenge(classify(req).repo))
			writeError(w, req, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		}
	})
}

// challenge is the WWW-Authenticate value of a 401 for repo ("" for
// requests outside a repository).
func (a *authenticator) challenge(repo string) string {
	if !a.bearer {
		return `Basic realm="registrytest"`
	}
	c := fmt.Sprintf(`Bearer realm=%q,service="registrytest"`, a.realm)
	if repo != "" {
		c += fmt.Sprintf(`,scope="repository:%s:pull,push"`, repo)
	}
	return c
}

func (a *authenticator) credentialsOK(user, pass string) bool {
	return subtle.ConstantTimeCompare([]byte(user), []byte(a.user)) == 1 &&
		subtle.ConstantTimeCompare([]byte(pass), []byte(a.pass)) == 1
}

// allowed checks a request's credentials. A token is checked when the
// request arrives, so a transfer that started with a valid token finishes
// even if the token expires meanwhile, as on real registries.
func (a *authenticator) allowed(req *http.Request) bool {
	if !a.bearer {
		user, pass, ok := req.BasicAuth()
		return ok && a.credentialsOK(user, pass)
	}
	token, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	expiry, ok := a.tokens[token]
	return ok && (a.ttl <= 0 || time.Now().Before(expiry))
}

// serveToken issues tokens: GET with Basic credentials (the distribution
// token protocol) or POST with the OAuth2 password grant (oras-go's
// ForceAttemptOAuth2). Refresh tokens are not supported.
func (a *authenticator) serveToken(w http.ResponseWriter, req *http.Request) {
	var user, pass string
	var ok bool
	switch req.Method {
	case http.MethodGet:
		user, pass, ok = req.BasicAuth()
	case http.MethodPost:
		if err := req.ParseForm(); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
			return
		}
		if req.PostForm.Get("grant_type") != "password" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
			return
		}
		user, pass, ok = req.PostForm.Get("username"), req.PostForm.Get("password"), true
	default:
		writeError(w, req, http.StatusMethodNotAllowed, "UNSUPPORTED", "use GET or POST")
		return
	}
	if !ok || !a.credentialsOK(user, pass) {
		writeError(w, req, http.StatusUnauthorized, "UNAUTHORIZED", "invalid credentials")
		return
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		writeError(w, req, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	token := hex.EncodeToString(raw)
	now := time.Now()
	a.mu.Lock()
	for t, exp := range a.tokens {
		if a.ttl > 0 && now.After(exp) {
			delete(a.tokens, t)
		}
	}
	a.tokens[token] = now.Add(a.ttl)
	a.mu.Unlock()
	resp := map[string]any{"token": token, "access_token": token, "issued_at": now.UTC().Format(time.RFC3339)}
	if a.ttl > 0 {
		resp["expires_in"] = max(int(a.ttl/time.Second), 1)
	}
	writeJSON(w, http.StatusOK, resp)
}

func writeError(w http.ResponseWriter, req *http.Request, status int, code, message string) {
	body := ociError(status, classify(req).kind, code, message)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	if req.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
