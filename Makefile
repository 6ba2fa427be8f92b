# claude-route — the two commands that matter: `make run` and `make test`.
CARGO  ?= cargo
BIN    := target/release/claude-route
ARGS   ?=
# The profile-guided build (`make pgo`), remade when the code it is built from changes.
PGO_BIN := target/pgo/claude-route
PGO_SOURCES := $(shell find src -name '*.rs') Cargo.toml Cargo.lock scripts/pgo-build

.PHONY: build run test lint bench bench-deps pgo keygen pool recover sync status keys

build:
	$(CARGO) build --release

run: build
	$(BIN) serve $(ARGS)

test:
	$(CARGO) test --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# nginx is the reference proxy of the bench; installed (Debian's nginx-light) when missing
# and we may, skipped by the bench otherwise.
bench-deps:
	@command -v nginx >/dev/null 2>&1 || [ ! -x /usr/bin/apt-get ] || [ "$$(id -u)" != 0 ] || \
		{ apt-get install -y nginx-light >/dev/null 2>&1 || \
		  { apt-get update >/dev/null 2>&1 && apt-get install -y nginx-light >/dev/null 2>&1; }; } || \
		echo "nginx-light could not be installed; the bench runs without it"

# About 9 % more req/s than `make build` (BENCHMARKS.md, eighteenth pass); takes ~8 minutes.
pgo: $(PGO_BIN)

$(PGO_BIN): $(PGO_SOURCES)
	CARGO="$(CARGO)" scripts/pgo-build

# The profile-guided build is benched when it can be made, the plain one otherwise.
bench: build bench-deps
	$(CARGO) build --release --example mock_upstream --example stack_floor --example bench
	@if $(MAKE) --no-print-directory pgo; then bin=$(PGO_BIN); else bin=$(BIN); \
		echo "bench: no profile-guided build; benching $(BIN)"; fi; \
	ulimit -n $$(ulimit -Hn) 2>/dev/null; \
	BENCH_PROXY_BIN=$$bin $(CARGO) run --release --example bench -- $(ARGS)

keygen: build
	@test -n "$(TIER)" || { echo "usage: make keygen TIER=trial|medium|high|supreme [ACCOUNT=name] [DAYS=n] [NOTE=text]"; exit 2; }
	@$(BIN) keygen $(TIER) $(if $(ACCOUNT),--account $(ACCOUNT)) $(if $(DAYS),--days $(DAYS)) $(if $(NOTE),--note "$(NOTE)")

keys: build
	@$(BIN) keys list

pool: build
	@$(BIN) pool

recover: build
	@test -n "$(ACCOUNT)" || { echo "usage: make recover ACCOUNT=name"; exit 2; }
	@$(BIN) recover $(ACCOUNT)

sync: build
	@$(BIN) sync

status: build
	@$(BIN) status
