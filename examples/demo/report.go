package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/sturdyoci/sturdy/examples/internal/ui"
	"github.com/sturdyoci/sturdy/examples/registrytest"
)

// report prints a phase's outcome: the tracker's summary (what sturdy
// saw) and the registry's counters (what crossed its sockets).
func (d *demo) report(r phaseResult) {
	status := "ok"
	switch {
	case r.err != nil:
		status = "FAILED"
	case r.name == "cut":
		status = "interrupted, as planned,"
	}
	fmt.Fprintf(d.out, "\n%s %s in %s\n", r.name, status, ui.Duration(r.elapsed))
	for _, line := range strings.Split(r.summary.String(), "\n") {
		fmt.Fprintln(d.out, "  "+line)
	}
	wire, dir := r.stats.WireUp, "received"
	if r.name != "push" {
		wire, dir = r.stats.WireDown, "sent"
	}
	who := "registry"
	if r.name == "mirror" {
		who = "origin"
	}
	fmt.Fprintf(d.out, "  %s %s %s on its sockets", who, dir, ui.Bytes(wire))
	if r.summary.Payload > 0 {
		fmt.Fprintf(d.out, " (%.2fx the payload, headers included)", float64(wire)/float64(r.summary.Payload))
	}
	fmt.Fprintln(d.out)
	if r.name == "mirror" {
		fmt.Fprintln(d.out, "           (what it sent the cold cache included: the cache fetched from it as it served)")
	}
	if r.name == "push" && float64(r.summary.Wire) > 1.02*float64(wire) {
		// sturdy counts what it handed to the connection; a reset throws
		// away what was still in the socket buffers on the way.
		fmt.Fprintf(d.out, "           (sturdy sent %s more than the registry read: bytes in socket buffers when a connection was reset)\n",
			ui.Bytes(r.summary.Wire-wire))
	}
	writeKinds(d.out, r.stats, "           ")
	for i, f := range r.plan {
		if r.applied[i] < 0 {
			fmt.Fprintf(d.out, "  link     %s\n", f.text)
			continue
		}
		fmt.Fprintf(d.out, "  fault    %s: applied to %d request(s)\n", f.text, r.applied[i])
	}
	if r.err != nil {
		fmt.Fprintf(d.out, "  error    %v\n", r.err)
	}
}

// writeKinds prints one line per request kind: how many, and the statuses
// the clients were sent. "cut" counts requests that got no status line
// (reset, stalled or dropped before it).
func writeKinds(w io.Writer, s registrytest.Stats, indent string) {
	kinds := make([]registrytest.Kind, 0, len(s.Kinds))
	for k := range s.Kinds {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		ks := s.Kinds[k]
		codes := make([]int, 0, len(ks.Statuses))
		for c := range ks.Statuses {
			codes = append(codes, c)
		}
		slices.Sort(codes)
		parts := make([]string, 0, len(codes))
		for _, c := range codes {
			name := fmt.Sprint(c)
			if c == 0 {
				name = "cut"
			}
			parts = append(parts, fmt.Sprintf("%s x%d", name, ks.Statuses[c]))
		}
		fmt.Fprintf(w, "%s%-13s %3d requests: %s\n", indent, k, ks.Requests, strings.Join(parts, ", "))
	}
}
