#!/usr/bin/env bash
# Instruction counts of the forwarding-core and relay-frame micro-benchmarks under callgrind.
#
# Owns nothing but this report: it builds the criterion bench binaries of kaskade-mesh
# (`forwarding_core`) and kaskade-proto (`relay_frame`), and runs every case of each in their
# fixed-iterations mode (`KASKADE_BENCH_ITERS`, no criterion) under `valgrind --tool=callgrind`,
# twice: with N iterations and with 0. The Ir total of the second is the process's startup and the
# case's setup; the difference divided by N is the instructions of one iteration, which repeats
# exactly from run to run (unlike criterion's time-based iteration counts).
#
# Usage: bench/callgrind.sh [SUBSTRING...]   (only cases whose name contains one of them)
# Env:   KASKADE_BENCH_ITERS   iterations per case (default 1000)
#        CALLGRIND_KEEP=DIR    keep the callgrind.out files there (for callgrind_annotate)
# Needs: cargo, valgrind.
set -euo pipefail

cd "$(dirname "$0")/.."
iters="${KASKADE_BENCH_ITERS:-1000}"
filters=("$@")
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
keep="${CALLGRIND_KEEP:-}"
[[ -n "$keep" ]] && mkdir -p "$keep"

command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 1; }

# Builds one bench target and prints the path of its executable.
bench_executable() {
    local package="$1" bench="$2"
    cargo bench -p "$package" --bench "$bench" --no-run --message-format=json-render-diagnostics \
        | grep '"reason":"compiler-artifact"' \
        | grep '"kind":\["bench"\]' \
        | grep "\"name\":\"$bench\"" \
        | grep -o '"executable":"[^"]*"' \
        | cut -d'"' -f4 \
        | tail -n 1
}

selected() {
    local name="$1" f
    [[ ${#filters[@]} -eq 0 ]] && return 0
    for f in "${filters[@]}"; do
        [[ "$name" == *"$f"* ]] && return 0
    done
    return 1
}

# Total instructions (Ir) of one run of `case` with `n` iterations.
instructions() {
    local exe="$1" case="$2" n="$3" out
    out="$work/callgrind.out"
    KASKADE_BENCH_ITERS="$n" KASKADE_BENCH_CASE="$case" \
        valgrind --tool=callgrind --callgrind-out-file="$out" "$exe" </dev/null >/dev/null 2>"$work/valgrind.log" \
        || { cat "$work/valgrind.log" >&2; exit 1; }
    if [[ -n "$keep" ]]; then
        cp "$out" "$keep/callgrind.$(basename "$exe" | cut -d- -f1).${case//\//.}.$n.out"
    fi
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

printf '%-44s %14s %14s\n' "case (iterations: $iters)" "Ir/iteration" "Ir/element"
for target in kaskade-mesh:forwarding_core kaskade-proto:relay_frame; do
    exe="$(bench_executable "${target%%:*}" "${target##*:}")"
    [[ -x "$exe" ]] || { echo "callgrind.sh: no executable for $target" >&2; exit 1; }
    # Zero iterations of every case just lists them: `case NAME iters=0 elements=E`.
    while read -r _ name _ elements; do
        selected "$name" || continue
        elements="${elements#elements=}"
        base="$(instructions "$exe" "$name" 0)"
        total="$(instructions "$exe" "$name" "$iters")"
        awk -v name="$name" -v base="$base" -v total="$total" -v n="$iters" -v e="$elements" 'BEGIN {
            per = (total - base) / n
            printf "%-44s %14.1f %14s\n", name, per, (e > 0 ? sprintf("%.1f", per / e) : "-")
        }'
    done < <(KASKADE_BENCH_ITERS=0 "$exe")
done
