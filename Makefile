# The two commands: `make serve` and `make test`. Both set up what is missing
# first (scripts/setup.sh) and are quick once set up.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
# Every recipe line runs with the toolchain chosen by setup on PATH.
ENV := source scripts/env.sh &&

.PHONY: setup serve test test-native test-fuzz test-wasm test-browser web bench-page fuzz screenshots

setup:
	@bash scripts/setup.sh

# The page on http://127.0.0.1:8080 with the bundled default model.
serve: setup
	$(ENV) env $$WASM_ENV trunk serve --release

test: setup
	$(MAKE) --no-print-directory test-native test-fuzz test-wasm test-browser

test-native:
	$(ENV) cargo test --locked

# Every parser of untrusted input fuzzed for a minute, two targets at a time
# (test-native ran each on its seeds and 300 mutations already). `make fuzz`
# is the long run; README.md, "Fuzzing".
test-fuzz:
	$(ENV) FUZZ_SECONDS=$${FUZZ_SECONDS:-60} FUZZ_JOBS=$${FUZZ_JOBS:-2} cargo test --locked --test fuzz

# Every fuzz target for 10 minutes; fails on a panic, an input over a second,
# more than 512 MB live, or a crash, and names the saved inputs
# (target/fuzz/<target>/failures/). FUZZ_SECONDS, FUZZ_TARGETS, FUZZ_SEED and
# FUZZ_JOBS change it.
fuzz: setup
	$(ENV) FUZZ_SECONDS=$${FUZZ_SECONDS:-600} FUZZ_JOBS=$${FUZZ_JOBS:-2} cargo test --locked --test fuzz

# The model core alone (no web, no GPU) must compile for wasm32 too.
test-wasm:
	$(ENV) env $$WASM_ENV cargo build --locked --lib --no-default-features --target wasm32-unknown-unknown

web:
	$(ENV) env $$WASM_ENV trunk build --release
	@ls -l dist/*.wasm | awk '{ printf "wasm size: %s bytes (%s)\n", $$5, $$9 }'

# Headless Chromium: the GPU engine on WebGPU against the golden data
# (wasm-bindgen-test through chromedriver, flags in webdriver.json), then the
# built page, driven by Playwright; the CLI (built by test-native) gives the
# expected predictions.
test-browser: web
	$(ENV) env $$WASM_ENV CHROMEDRIVER=$$(command -v chromedriver) \
		CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
		cargo test --locked --target wasm32-unknown-unknown --test browser_gpu
	$(ENV) node --test tests/browser/page.test.mjs

# Page timings in headless Chromium (BENCHMARKS.md): run to first and last
# layer, effect ranking, and the circuit canvas with 10,000+ edges.
bench-page: setup web
	$(ENV) cargo build --locked
	$(ENV) node tests/browser/bench.mjs

# The README's screenshots (docs/screenshot.png, docs/tour.png), from the built page at 1440x900.
screenshots: setup web
	$(ENV) node tests/browser/screenshots.mjs
