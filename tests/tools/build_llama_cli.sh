#!/usr/bin/env bash
# Build llama.cpp's own tools (the TARGETS below: `llama-completion`, `ggml-rpc-server`,
# `llama-bench`, `llama-cvector-generator`) from exactly the llama.cpp source that
# llama-cpp-python $LLAMA_CPP_PYTHON_VERSION vendors, configured the way `pip install
# llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION` configures it, so their numerics match the Python
# bindings bit for bit. llama-completion is used by the control-vector interop tests;
# ggml-rpc-server by `steer rpc-server` (docs/scaling.md); llama-bench and
# llama-cvector-generator are the references bench/reference_bench.py compares steer with.
#
# Idempotent: the result is cached in
# ${XDG_CACHE_HOME:-$HOME/.cache}/steer/llama-cli-<version>-<hash of the configuration>/ (one
# folder per configuration, so checkouts with different flags or targets never rebuild over each
# other) and a second run only checks it. The last line on stdout is llama-completion's path
# (the other tools sit next to it), or that of the tool named as the first argument; everything
# else (pip, cmake, compiler chatter) goes to stderr.
#
# Why llama-completion: it is the smallest tool that takes the common arguments
# (--control-vector-scaled, --control-vector-layer-range) and does a one-shot completion
# (-no-cnv -n N). llama-cli is now a chat front end built on the server (LLAMA_BUILD_SERVER);
# examples/simple takes no common arguments.
#
# How the configuration is matched: instead of configuring vendor/llama.cpp on its own, the
# script configures the sdist's own top-level CMakeLists.txt (the one scikit-build-core runs for
# the wheel) with the same build type, so every option the wheel gets (BUILD_SHARED_LIBS,
# LLAMA_CURL=OFF, GGML_NATIVE/LLAMAFILE/OPENMP defaults, ...) is the same. The only changes:
#   LLAVA_BUILD=OFF        mtmd is not needed (and tools/ adds it itself),
#   LLAMA_BUILD_TOOLS=ON   to get tools/completion (off by default when llama.cpp is a subproject),
#   CMAKE_BUILD_RPATH_USE_ORIGIN=ON  so the binary and its libraries can be moved together.
# None of them touches ggml or libllama compile flags. The ggml flags come from
# llama_cmake_args.sh, as the Makefile's wheel build takes them ($CMAKE_ARGS, when set, wins
# in both), and are passed on like scikit-build-core does.
# If the installed wheel's lib/cmake/ggml/ggml-config.cmake is found, the GGML_* options of this
# build are compared with it and a difference is reported on stderr.
#
# Environment: PYTHON (python whose pip downloads the sdist; default: the repo's .venv, else
# python3), STEER_LLAMA_CLI_JOBS (default 2), STEER_KEEP_BUILD=1 keeps the build tree.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36
JOBS=${STEER_LLAMA_CLI_JOBS:-2}
TARGET=llama-completion            # the one whose path is printed
TARGETS=(                          # everything built and cached, one line each
    llama-completion
    ggml-rpc-server
    llama-bench
    llama-cvector-generator
)
WANT=${1:-$TARGET}
[[ " ${TARGETS[*]} " == *" $WANT "* ]] || { echo "build_llama_cli: unknown tool $WANT (one of: ${TARGETS[*]})" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/steer
work=$cache_root/build/llama-cpp-python-$LLAMA_CPP_PYTHON_VERSION
sdist_dir=$cache_root/sdist

# What decides the build; a cached binary built with anything else is rebuilt.
CMAKE_OPTS=(
    -DCMAKE_BUILD_TYPE=Release   # scikit-build-core's default cmake.build-type
    -DLLAVA_BUILD=OFF
    -DLLAMA_BUILD_TOOLS=ON
    -DCMAKE_BUILD_RPATH_USE_ORIGIN=ON
)
# shellcheck disable=SC2206  # CMAKE_ARGS is a space-separated list, as scikit-build-core reads it
extra=($(bash "$here/llama_cmake_args.sh"))  # $CMAKE_ARGS, else the flags the Makefile uses
stamp_text="llama-cpp-python=$LLAMA_CPP_PYTHON_VERSION targets=${TARGETS[*]} opts=${CMAKE_OPTS[*]} ${extra[*]:-} cc=$("${CC:-cc}" --version 2>/dev/null | head -1 || true)"
case ${SOURCE_DATE_EPOCH+set} in set) stamp_text+=" SOURCE_DATE_EPOCH";; esac
dest=$cache_root/llama-cli-$LLAMA_CPP_PYTHON_VERSION-$(printf '%s' "$stamp_text" | sha256sum | cut -c1-12)

log() { printf '%s\n' "build_llama_cli: $*" >&2; }

reuse() {
    [[ -f $dest/STAMP ]] || return 1
    for t in "${TARGETS[@]}"; do [[ -x $dest/$t ]] || return 1; done
    [[ $(cat "$dest/STAMP") == "$stamp_text" ]] || return 1
    "$dest/$TARGET" --version >/dev/null 2>&1 || return 1
}

if reuse; then
    echo "$dest/$WANT"
    exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.llama-cli.lock"
flock 9                      # another run may be building; wait for it, then look again
if reuse; then
    echo "$dest/$WANT"
    exit 0
fi

# -- source ---------------------------------------------------------------------------------
tarball=$sdist_dir/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz
if [[ ! -f $tarball ]]; then
    if [[ -z ${PYTHON:-} ]]; then
        if [[ -x $repo/.venv/bin/python ]]; then PYTHON=$repo/.venv/bin/python; else PYTHON=python3; fi
    fi
    mkdir -p "$sdist_dir"
    log "downloading the llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist with $PYTHON -m pip"
    "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: \
        "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$sdist_dir" >&2
fi
[[ -f $tarball ]] || { log "pip did not produce $tarball"; exit 1; }

rm -rf "$work"
mkdir -p "$work"
log "extracting $tarball"
tar -xzf "$tarball" -C "$work"
src=$work/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION
[[ -f $src/vendor/llama.cpp/tools/completion/completion.cpp ]] || {
    log "the sdist has no vendor/llama.cpp/tools/completion"; exit 1; }

# -- configure and build ---------------------------------------------------------------------
generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi  # scikit-build-core's choice too
log "configuring: ${CMAKE_OPTS[*]} ${extra[*]:-}"
cmake -S "$src" -B "$work/build" "${generator[@]}" "${CMAKE_OPTS[@]}" "${extra[@]}" >&2
log "building ${TARGETS[*]} with -j $JOBS"
t0=$(date +%s)
cmake --build "$work/build" --target "${TARGETS[@]}" -j "$JOBS" >&2
log "built in $(( $(date +%s) - t0 ))s"

# -- compare the ggml configuration with the installed wheel's, when it can be found -----------
wheel_cfg=""
for py in "${PYTHON:-}" "$repo/.venv/bin/python"; do
    [[ -n $py && -x $py ]] || continue
    wheel_cfg=$("$py" - <<'EOF' 2>/dev/null || true
import importlib.util, pathlib
spec = importlib.util.find_spec("llama_cpp")
if spec and spec.origin:
    p = pathlib.Path(spec.origin).parent.parent / "lib/cmake/ggml/ggml-config.cmake"
    if p.is_file():
        print(p)
EOF
)
    [[ -n $wheel_cfg ]] && break
done
if [[ -n $wheel_cfg ]]; then
    opts() { grep -E '^set\(GGML_' "$1" | grep -vE 'GGML_(BUILD_COMMIT|GIT_DIRTY|BUILD_NUMBER|CCACHE_FOUND|SCCACHE_FOUND)\b'; }
    if diff <(opts "$wheel_cfg") <(opts "$work/build/vendor/llama.cpp/ggml/ggml-config.cmake") >&2; then
        log "ggml options match the installed wheel's ($wheel_cfg)"
    else
        log "WARNING: ggml options differ from the installed wheel's ($wheel_cfg); see diff above"
    fi
fi

# -- install into the cache --------------------------------------------------------------------
bin=$work/build/bin
tmp=$dest.tmp.$$
rm -rf "$tmp"
mkdir -p "$tmp"
for t in "${TARGETS[@]}"; do
    cp -a "$bin/$t" "$tmp/"
done
for lib in "$bin"/lib*.so*; do
    cp -a "$lib" "$tmp/"
done
printf '%s\n' "$stamp_text" >"$tmp/STAMP"
if ! "$tmp/$TARGET" --version >/dev/null 2>&1; then
    log "the installed copy does not run:"; "$tmp/$TARGET" --version >&2 || true; exit 1
fi
rm -rf "$dest"
mv "$tmp" "$dest"
if [[ ${STEER_KEEP_BUILD:-0} != 1 ]]; then
    rm -rf "$work"
    rmdir "$cache_root/build" 2>/dev/null || true
fi
echo "$dest/$WANT"
