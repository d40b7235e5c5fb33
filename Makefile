# sturdy — see README.md.
GO        ?= go
EXAMPLES  := examples
TESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: all test vet test-root test-examples demo bench fuzz tidy

all: test

## test: vet and race tests for both modules.
test: vet test-root test-examples

vet:
	$(GO) vet ./...
	$(GO) -C $(EXAMPLES) vet ./...

test-root:
	$(GO) test $(TESTFLAGS) ./...

test-examples:
	$(GO) -C $(EXAMPLES) test $(TESTFLAGS) ./...

## demo: push and pull a model-like artifact through a faulty in-process registry.
demo:
	$(GO) -C $(EXAMPLES) run ./demo $(DEMOFLAGS)

## bench: sturdy vs plain oras-go vs restart-from-zero, side by side.
bench:
	$(GO) -C $(EXAMPLES) run ./bench $(BENCHFLAGS)

## fuzz: run each fuzz target for FUZZTIME (default 30s).
FUZZTIME ?= 30s
fuzz:
	$(GO) test ./retrypolicy -run '^$$' -fuzz FuzzClassify -fuzztime $(FUZZTIME)

tidy:
	$(GO) mod tidy
	$(GO) -C $(EXAMPLES) mod tidy
