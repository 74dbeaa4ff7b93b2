#!/usr/bin/env bash
# Installs everything `make serve` and `make test` need, and nothing twice.
#
# Two ways to get a Rust that targets wasm32 (see shared/TOOLCHAIN.md):
#   rustup  - a normal laptop: rustup has, or can add, wasm32-unknown-unknown.
#   debian  - rustup cannot download the target (this project's machines):
#             Debian's rustc-web 1.96 builds std for wasm32 from source
#             (RUSTC_BOOTSTRAP + build-std, set by scripts/env.sh).
# Tools go to $CIRCUITSCOPE_TOOLS (default ~/.cache/circuitscope/tools), outside
# the clone, so a fresh clone on the same machine reuses them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/versions.env
TOOLS="${CIRCUITSCOPE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/circuitscope/tools}"
mkdir -p "$TOOLS/bin"

say() { printf '[setup] %s\n' "$*" >&2; }

can_apt() { command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; }
apt_updated=no
apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! can_apt; then
        say "missing system packages: ${missing[*]} (install them, then rerun)"
        return 1
    fi
    if [ $apt_updated = no ]; then
        say "apt-get update"
        apt-get update -qq >/dev/null
        apt_updated=yes
    fi
    say "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# --- 1. Rust for native and wasm32 -------------------------------------------
# CIRCUITSCOPE_TOOLCHAIN=debian forces the Debian route (to test it where
# rustup would work).
mode=""
if [ "${CIRCUITSCOPE_TOOLCHAIN:-}" != debian ] && command -v rustup >/dev/null; then
    if rustup target list --installed 2>/dev/null | grep -q '^wasm32-unknown-unknown$'; then
        mode=rustup
    elif timeout 300 rustup target add wasm32-unknown-unknown >/dev/null 2>&1; then
        mode=rustup
    fi
fi
if [ -z "$mode" ]; then
    if command -v apt-get >/dev/null; then
        apt_install rustc-web cargo-web rust-web-src rust-web-llvm lld-22
        mode=debian
    else
        say "no Rust with the wasm32-unknown-unknown target: install rustup, then"
        say "  rustup target add wasm32-unknown-unknown"
        exit 1
    fi
fi
echo "$mode" >"$TOOLS/mode"
source scripts/env.sh

# --- 2. Browser and Vulkan for the tests ---------------------------------------
# Headless Chromium (WebGPU on SwiftShader) drives the page; Mesa's lavapipe
# gives native wgpu a Vulkan device without a GPU.
if [ -z "${CHROME:-}" ]; then
    apt_install chromium chromium-driver || say "set CHROME=/path/to/chrome (and put a matching chromedriver on PATH) to run the browser tests"
fi
if command -v apt-get >/dev/null; then
    apt_install mesa-vulkan-drivers libvulkan1 || say "no Vulkan driver: GPU tests will use whatever adapter wgpu finds"
fi

# --- 3. Cargo-installed tools, pinned ----------------------------------------
cargo_tool() { # crate version binary [extra cargo install flags]
    local crate=$1 version=$2 bin=$3
    shift 3
    if "$TOOLS/bin/$bin" --version 2>/dev/null | grep -q " $version\$"; then return 0; fi
    say "cargo install $crate $version (a few minutes, once)"
    cargo install --quiet --root "$TOOLS" "$crate" --version "$version" "$@"
}
# Not --locked: the registry lacks one locked dependency version of
# wasm-bindgen-cli (shared/TOOLCHAIN.md).
cargo_tool wasm-bindgen-cli "$WASM_BINDGEN_VERSION" wasm-bindgen
# --locked: newer semver-compatible releases of lightningcss's dependencies
# no longer compile with it.
cargo_tool trunk "$TRUNK_VERSION" trunk --locked

# --- 4. npm tools: wasm-opt (binaryen) and playwright-core ---------------------
if ! command -v npm >/dev/null; then apt_install nodejs npm; fi
for pkg in "binaryen:$BINARYEN_VERSION" "playwright-core:$PLAYWRIGHT_CORE_VERSION"; do
    grep -q "\"${pkg%%:*}\": \"${pkg#*:}\"" package.json ||
        { say "package.json does not pin ${pkg%%:*} ${pkg#*:} (scripts/versions.env)"; exit 1; }
done
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    say "npm ci"
    npm ci --silent --no-audit --no-fund
fi

# --- 5. The wasm-bindgen crate must equal the CLI ------------------------------
if [ -f Cargo.lock ]; then
    locked=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
    if [ -n "$locked" ] && [ "$locked" != "$WASM_BINDGEN_VERSION" ]; then
        say "Cargo.lock has wasm-bindgen $locked but scripts/versions.env pins $WASM_BINDGEN_VERSION"
        exit 1
    fi
fi
say "ready ($mode toolchain: $(rustc --version))"
