#!/usr/bin/env bash
# Rebuilds this folder with mtkit as of commit fa34593 (the layout before the subpackages):
#   git worktree add /tmp/mtkit-fa34593 fa34593
#   tests/data/previous_release/make.sh /tmp/mtkit-fa34593
# Python runs from that checkout, which comes first on sys.path, so `python -m mtkit.*`
# is the old code; any environment with mtkit's dependencies will do.
set -euo pipefail

OLD="$(cd "${1:?usage: make.sh PATH-TO-A-CHECKOUT-OF-fa34593}" && pwd)"
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$OLD"
[[ "$(git rev-parse --short=7 HEAD)" == fa34593 ]] || { echo "$OLD is not at fa34593" >&2; exit 1; }

# A very small model on the embedded corpus: 600 updates at a high learning rate, enough
# for word-like output (validation BLEU ~0.2) in a few minutes.
"$PYTHON" -m mtkit.train model=small tokenizer.vocab_size=200 model.embed_dim=16 \
    model.encoder_hidden=16 model.decoder_hidden=24 train.lr=0.02 train.max_steps=600 \
    train.max_minutes=null train.valid_every=600 train.keep_checkpoints=0 train.device=cpu \
    train.precision=fp32 train.threads=1 train.test_at_end=false \
    "hydra.run.dir=$WORK/run" "data.cache_dir=$WORK/cache"

# Most of best.pt is the sentencepiece model's normalization table (NFKC, ~240 KB). It is
# replaced by the identity normalization, which maps the corpus's ASCII text the same way,
# and the payload is written again with the old code's save_checkpoint.
"$PYTHON" - "$WORK/run/best.pt" "$HERE/best.pt" <<'PY'
import sys
from pathlib import Path

from sentencepiece import sentencepiece_model_pb2

from mtkit.checkpoint import load_checkpoint, save_checkpoint

payload = load_checkpoint(sys.argv[1])
proto = sentencepiece_model_pb2.ModelProto()
proto.ParseFromString(payload["codec"]["src_model"])
proto.normalizer_spec.name = "identity"
proto.normalizer_spec.precompiled_charsmap = b""
payload["codec"]["src_model"] = proto.SerializeToString()
save_checkpoint(payload, Path(sys.argv[2]))
PY

head -n 20 data/synth/test.en >"$HERE/input.en"
translate() {
    "$PYTHON" -m mtkit.translate "$HERE/best.pt" -i "$HERE/input.en" --threads 1 "$@" 2>/dev/null
}
translate --beam-size 1 >"$HERE/greedy.txt"
translate --beam-size 3 >"$HERE/beam3.txt"
translate --beam-size 3 --nbest 2 --scores >"$HERE/beam3-nbest2-scores.txt"
translate --beam-size 1 --precision int8 >"$HERE/int8-greedy.txt"
translate --beam-size 3 --precision int8 >"$HERE/int8-beam3.txt"
