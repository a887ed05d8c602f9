#!/usr/bin/env bash
# The compiled kernels under AddressSanitizer and UndefinedBehaviorSanitizer (issue 12).
#
#   tools/sanitize.sh [PYTEST ARGS...]     (default: the hostile, codec, format and spec tests)
#
# Builds dcformat/_kernels.c with -fsanitize=address,undefined into a scratch copy of the
# checkout (the working tree's own build is left alone), then runs the tests there with the
# compiled kernels required (DCFORMAT_KERNELS=compiled): the malformed catalogue, the limits
# tests, the fuzz corpus and crash replays (each tensor decoded by both kernels and compared),
# the frozen vectors and the compiled-vs-numpy properties. Any sanitizer report aborts the run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$root/dcformat" "$root/tests" "$root/fuzz" "$root/spec" "$root/tools" "$root/pyproject.toml" "$work/"
rm -f "$work"/dcformat/_kernels*.so
include="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
suffix="$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
gcc -std=c11 -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
    -Wall -Wextra -Wno-unused-parameter -Werror -fPIC -shared -I"$include" \
    "$root/dcformat/_kernels.c" -o "$work/dcformat/_kernels$suffix"
# python itself is not instrumented: the sanitizer runtimes are preloaded into it.
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export DCFORMAT_KERNELS=compiled
cd "$work"
"$python" -c 'import dcformat._kernels as k, sys; assert k.__file__.startswith(sys.argv[1]), k.__file__' "$work"
if [ "$#" -eq 0 ]; then
    set -- tests/hostile tests/codecs tests/format tests/spec tests/test_kernels.py
fi
"$python" -m pytest -q -p no:cacheprovider "$@"
echo "tools/sanitize.sh: no sanitizer report"
