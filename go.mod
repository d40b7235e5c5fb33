module github.com/sturdyoci/sturdy

go 1.26.0

require (
	github.com/cenkalti/backoff/v4 v4.3.0
	github.com/opencontainers/go-digest v1.0.0
	github.com/opencontainers/image-spec v1.1.1
	go.uber.org/goleak v1.3.0
	oras.land/oras-go/v2 v2.7.0
)

require golang.org/x/sync v0.25.0
