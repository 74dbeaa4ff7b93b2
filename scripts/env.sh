# Sourced (not run) by the Makefile and scripts/setup.sh: puts the toolchain
# chosen by setup.sh, the pinned tools and node_modules/.bin on PATH.
TOOLS="${CIRCUITSCOPE_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/circuitscope/tools}"
CIRCUITSCOPE_TOOLCHAIN=$(cat "$TOOLS/mode" 2>/dev/null || echo rustup)
export PATH="$TOOLS/bin:$PWD/node_modules/.bin:$PATH"
if [ "$CIRCUITSCOPE_TOOLCHAIN" = debian ]; then
    # Debian's cargo/rustc 1.96 before rustup's proxies in ~/.cargo/bin.
    export PATH="$TOOLS/bin:$PWD/node_modules/.bin:/usr/bin:$PATH"
    # Always set: toggling it invalidates every build artefact.
    export RUSTC_BOOTSTRAP=1
    # Only wasm builds take this (build-std needs --target); see wasm_env.
    WASM_ENV="CARGO_UNSTABLE_BUILD_STD=std,panic_abort"
else
    WASM_ENV=""
fi
export TRUNK_SKIP_VERSION_CHECK=true
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/circuitscope-runtime}"
mkdir -p "$XDG_RUNTIME_DIR" 2>/dev/null && chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true
export CIRCUITSCOPE_TOOLCHAIN WASM_ENV
