package registrytest

import (
	"maps"
	"sync"
)

// Stats is a snapshot of what crossed the registry's connections.
type Stats struct {
	// WireDown counts bytes the registry sent on all connections and WireUp
	// bytes it received: status lines, headers and TLS records included,
	// counted at the socket. "WireUp / blob size" is what a push cost.
	WireDown, WireUp int64
	// Kinds holds per-kind counters; a kind never seen is absent, and reads
	// as zero.
	Kinds map[Kind]KindStats
}

// KindStats counts the requests of one kind.
type KindStats struct {
	Requests int64
	// RequestBodyBytes counts upload body bytes the registry's handler
	// read. Both implementations keep every byte of a PATCH they read,
	// even from a broken one, so for UploadPatch this is also what the
	// sessions were given: "RequestBodyBytes / blob size" is what a push
	// cost the registry. What the client wrote is not seen here: bytes
	// still in its socket buffers when a cut comes never arrive; count
	// them on the client.
	RequestBodyBytes int64
	// LateBodyBytes is the part of RequestBodyBytes the registry read
	// after a realistic cut had reset the client (WithRealisticCuts): bytes
	// kept that the client cannot know were received.
	LateBodyBytes     int64
	ResponseBodyBytes int64 // body bytes the clients were sent (none for HEAD)
	// Cuts counts requests a ResetAfter or ResetEvery fault reset, in
	// either direction: "Requests / Cuts" is how many requests each cut
	// cost.
	Cuts int64
	// Statuses counts responses by the status the client was sent; 0 means
	// none was (reset, stall or drop before the status line).
	Statuses map[int]int64
}

// Stats returns a snapshot of the counters since start or ResetStats.
func (r *Registry) Stats() Stats {
	s := Stats{WireDown: r.wireDown.Load(), WireUp: r.wireUp.Load()}
	r.stats.mu.Lock()
	defer r.stats.mu.Unlock()
	s.Kinds = make(map[Kind]KindStats, len(r.stats.kinds))
	for k, ks := range r.stats.kinds {
		c := *ks
		c.Statuses = maps.Clone(ks.Statuses)
		s.Kinds[k] = c
	}
	return s
}

// ResetStats zeroes every counter, e.g. between the push and the pull of a
// test. Requests in flight keep counting into the new period.
func (r *Registry) ResetStats() {
	r.wireDown.Store(0)
	r.wireUp.Store(0)
	r.stats.reset()
}

type statsState struct {
	mu    sync.Mutex
	kinds map[Kind]*KindStats
}

func (s *statsState) reset() {
	s.mu.Lock()
	s.kinds = map[Kind]*KindStats{}
	s.mu.Unlock()
}

// of returns the counters of k; s.mu must be held.
func (s *statsState) of(k Kind) *KindStats {
	ks := s.kinds[k]
	if ks == nil {
		ks = &KindStats{Statuses: map[int]int64{}}
		s.kinds[k] = ks
	}
	return ks
}

func (s *statsState) request(k Kind) {
	s.mu.Lock()
	s.of(k).Requests++
	s.mu.Unlock()
}

func (s *statsState) requestBody(k Kind, n int) {
	if n > 0 {
		s.mu.Lock()
		s.of(k).RequestBodyBytes += int64(n)
		s.mu.Unlock()
	}
}

func (s *statsState) responseBody(k Kind, n int) {
	if n != 0 {
		s.mu.Lock()
		s.of(k).ResponseBodyBytes += int64(n)
		s.mu.Unlock()
	}
}

func (s *statsState) status(k Kind, code int) {
	s.mu.Lock()
	s.of(k).Statuses[code]++
	s.mu.Unlock()
}

func (s *statsState) lateBody(k Kind, n int) {
	if n > 0 {
		s.mu.Lock()
		s.of(k).LateBodyBytes += int64(n)
		s.mu.Unlock()
	}
}

func (s *statsState) cut(k Kind) {
	s.mu.Lock()
	s.of(k).Cuts++
	s.mu.Unlock()
}
