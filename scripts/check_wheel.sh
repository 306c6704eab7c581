#!/usr/bin/env bash
# The wheel works outside the checkout: build it, install it with the serve extra into a
# fresh virtual environment in a temporary folder, and from there run every console
# script's --help and one real pipeline (a tiny training on the embedded corpus, a
# shortlist, a translation with --shortlist). An editable install cannot show a package,
# a data file or a dependency missing from the wheel; this does. A few minutes, most of
# them installing the dependencies.
#
#   scripts/check_wheel.sh            (any Python >= 3.10 with pip; run by .ci/run)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
TORCH="torch==2.13.0"
SCRIPTS=(train translate evaluate average shortlist data serve experiment)
# Sizes as in the tests' tiny runs: a model that trains in seconds on 2 cores.
TINY=(
    tokenizer.vocab_size=200 model=small model.embed_dim=16 model.encoder_hidden=16
    model.decoder_hidden=24 train.device=cpu train.precision=fp32 train.threads=1
    train.max_steps=30 train.max_minutes=null train.valid_every=30 train.log_every=10
    train.test_at_end=false train.keep_checkpoints=0
)

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
say() { echo "check_wheel: $*"; }
fail() { echo "check_wheel: FAILED: $*" >&2; exit 1; }

# 1. The wheel, built from a copy of the tracked and unignored files, so that nothing the
#    checkout has built before (build/, *.egg-info) can slip into it.
say "building the wheel"
mkdir "$WORK/src"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard) \
    | while IFS= read -r -d '' file; do
        if [[ -e "$ROOT/$file" ]]; then printf '%s\0' "$file"; fi  # not deleted meanwhile
    done \
    | (cd "$ROOT" && xargs -0 cp --parents -t "$WORK/src")
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$WORK/src"
WHEEL="$(ls "$WORK"/dist/mtkit-*.whl)"

# 2. A fresh environment outside the checkout, with nothing of the checkout on its path.
say "installing $(basename "$WHEEL") into a fresh environment"
"$PYTHON" -m venv "$WORK/venv"
BIN="$WORK/venv/bin"
"$BIN/pip" install --quiet "$TORCH"
"$BIN/pip" install --quiet "$WHEEL[serve]"
cd "$WORK"
unset PYTHONPATH
where="$("$BIN/python" -c 'import mtkit; print(mtkit.__file__)')"
[[ "$where" == "$WORK/venv/"* ]] || fail "mtkit imported from $where, not the installed wheel"

# 3. Every console script answers --help.
for name in "${SCRIPTS[@]}"; do
    "$BIN/mtkit-$name" --help >"$WORK/help.txt" 2>&1 \
        || { cat "$WORK/help.txt" >&2; fail "mtkit-$name --help"; }
done
say "every console script answers --help"

# 4. Train, shortlist, translate: the embedded corpus and the configs ship in the wheel.
say "training a tiny model on the embedded corpus"
"$BIN/mtkit-train" "${TINY[@]}" "hydra.run.dir=$WORK/run" "data.cache_dir=$WORK/cache" \
    >"$WORK/train.txt" 2>&1 || { tail -20 "$WORK/train.txt" >&2; fail "mtkit-train"; }
[[ -f "$WORK/run/best.pt" ]] || fail "mtkit-train wrote no best.pt"
"$BIN/mtkit-shortlist" "$WORK/run/best.pt" -o "$WORK/best-sl.pt" --k 20 --frequent 20 \
    tokenizer.vocab_size=200 "data.cache_dir=$WORK/cache" 2>"$WORK/shortlist.txt" \
    || { cat "$WORK/shortlist.txt" >&2; fail "mtkit-shortlist"; }
data="$("$BIN/python" -c 'from mtkit.config import DATA_DIR; print(DATA_DIR)')"
[[ "$data" == "$WORK/venv/"* ]] || fail "the embedded corpus is read from $data, not the wheel"
head -n 8 "$data/synth/test.en" >"$WORK/input.txt"
"$BIN/mtkit-translate" "$WORK/best-sl.pt" --shortlist -i "$WORK/input.txt" \
    -o "$WORK/output.txt" 2>"$WORK/translate.txt" \
    || { cat "$WORK/translate.txt" >&2; fail "mtkit-translate --shortlist"; }
lines_in="$(wc -l <"$WORK/input.txt")"
lines_out="$(wc -l <"$WORK/output.txt")"
[[ "$lines_in" == "$lines_out" ]] || fail "$lines_out output lines for $lines_in input lines"
say "OK: trained, shortlisted and translated $lines_in lines with the installed wheel"
