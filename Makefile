# sturdy — see README.md.
GO        ?= go
EXAMPLES  := examples
REGTEST   := examples/registrytest
TESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: all test vet test-root test-registrytest test-examples demo bench fuzz lint tidy

all: test

## test: vet and race tests for every module: the library, examples and
## registrytest (a module of its own, so SDK authors can import it).
## registrytest runs alone (its tests time the lag of a cut to 100 ms); the
## library's then run beside the examples', whose end-to-end tests spend
## much of their time waiting on stalls and deadlines.
test: vet test-registrytest
	$(MAKE) --no-print-directory -j2 --output-sync=target test-root test-examples

vet:
	$(GO) vet ./...
	$(GO) -C $(REGTEST) vet ./...
	$(GO) -C $(EXAMPLES) vet ./...

test-root:
	$(GO) test $(TESTFLAGS) ./...

test-registrytest:
	$(GO) -C $(REGTEST) test $(TESTFLAGS) ./...

test-examples:
	$(GO) -C $(EXAMPLES) test $(TESTFLAGS) ./...

## demo: push and pull a model-like artifact through a faulty in-process registry.
demo:
	$(GO) -C $(EXAMPLES) run ./demo $(DEMOFLAGS)

## bench: sturdy vs plain oras-go vs restart-from-zero, side by side; prints
## the table and writes BENCHMARKS.md. About 9 minutes on 2 cores.
BENCHFLAGS ?= -out ../BENCHMARKS.md
bench:
	$(GO) -C $(EXAMPLES) run ./bench $(BENCHFLAGS)

## fuzz: run each fuzz target for FUZZTIME (default 30s). Their seed
## corpora (testdata/fuzz) run with every `make test`.
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./retrypolicy -run '^$$' -fuzz '^FuzzClassify$$' -fuzztime $(FUZZTIME)
	$(GO) test ./retrypolicy -run '^$$' -fuzz '^FuzzParseRetryAfter$$' -fuzztime $(FUZZTIME)
	$(GO) test ./internal/httpblob -run '^$$' -fuzz '^FuzzParseRanges$$' -fuzztime $(FUZZTIME)
	$(GO) test ./internal/redact -run '^$$' -fuzz '^FuzzText$$' -fuzztime $(FUZZTIME)

## lint: staticcheck, installed from the Go module proxy at a pinned version.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	$(GO) run $(STATICCHECK) ./...
	cd $(REGTEST) && $(GO) run $(STATICCHECK) ./...
	cd $(EXAMPLES) && $(GO) run $(STATICCHECK) ./...

tidy:
	$(GO) mod tidy
	$(GO) -C $(REGTEST) mod tidy
	$(GO) -C $(EXAMPLES) mod tidy
