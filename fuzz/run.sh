#!/usr/bin/env bash
# A bounded fuzz pass for CI: about 60 s of atheris/libFuzzer over the seed corpus.
#
#   fuzz/run.sh [SECONDS]            (default 60)
#
# Exits non-zero when the fuzzer finds a crash (the reproducer is written to
# $DCFORMAT_FUZZ_ARTIFACTS, default a temporary folder, and its path is printed); skips with
# a message and exit 0 when atheris is not installed. New corpus units go to a temporary
# folder, never into fuzz/corpus/, which is only read.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
seconds="${1:-60}"
python="${PYTHON:-python}"
if ! "$python" -c "import atheris" 2>/dev/null; then
    echo "fuzz/run.sh: atheris is not installed (pip install atheris): skipping the fuzz pass"
    exit 0
fi
work="$(mktemp -d)"
artifacts="${DCFORMAT_FUZZ_ARTIFACTS:-$work/artifacts}"
mkdir -p "$work/corpus" "$artifacts"
trap 'rm -rf "$work/corpus"' EXIT
status=0
"$python" "$here/harness.py" "$work/corpus" "$here/corpus" \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$work/log" 2>&1 || status=$?
grep -E "^(stat::|Done|#[0-9]+ +DONE)" "$work/log" || true
if [ "$status" -ne 0 ]; then
    tail -n 60 "$work/log"
    echo "fuzz/run.sh: the fuzzer found a problem (exit $status); reproducer(s) in $artifacts:"
    ls -l "$artifacts"
    exit 1
fi
echo "fuzz/run.sh: no crash in ${seconds} s"
