// Package e2e runs sturdy's transfer package against a real registry
// (registrytest: CNCF distribution with faults on the wire) for each class
// of fault in the design's fault model; the matrix (matrix_test.go) runs the
// main classes against go-containerregistry's registry too, whose protocol
// differs where resuming matters. It holds tests only.
package e2e
