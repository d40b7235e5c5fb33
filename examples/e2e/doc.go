// Package e2e runs sturdy's transfer package against a real registry
// (registrytest: CNCF distribution with faults on the wire) for each class
// of fault in the design's fault model. It holds tests only.
package e2e
