#!/usr/bin/env bash
# Fine-tuning, measured on both domains: a Multi30k en->fr model (captions) fine-tuned on
# 5,000 Tatoeba en-fr pairs (everyday sentences), test BLEU/chrF on both test sets before
# and after, with sacreBLEU's paired bootstrap of after against before.
#
#   scripts/finetune_demo.sh [CORPORA_DIR] [OUT_DIR]      (defaults: ../shared/corpora, runs/finetune)
#
# Multi30k has no second German-English domain beside it in the shared corpora, so the
# direction is English->French, where Tatoeba gives one. Each stage is skipped when its
# output exists, so an interrupted run continues.
set -euo pipefail
CORPORA=${1:-../shared/corpora}
OUT=${2:-runs/finetune}
M=$CORPORA/multi30k
T=$OUT/tatoeba5k
mkdir -p "$OUT" "$T"

# 5,000 random Tatoeba training pairs (seed 1); its dev and test sets as they are
if [ ! -f "$T/train.fr" ]; then
    python - "$CORPORA/tatoeba-en-fr" "$T" <<'PY'
import random, shutil, sys
source, target = sys.argv[1], sys.argv[2]
en = open(f"{source}/train.en", encoding="utf-8").read().split("\n")[:-1]
fr = open(f"{source}/train.fr", encoding="utf-8").read().split("\n")[:-1]
chosen = sorted(random.Random(1).sample(range(len(en)), 5000))
for lang, lines in (("en", en), ("fr", fr)):
    with open(f"{target}/train.{lang}", "w", encoding="utf-8") as out:
        out.writelines(lines[i] + "\n" for i in chosen)
    for split in ("dev", "test"):
        shutil.copy(f"{source}/{split}.{lang}", f"{target}/{split}.{lang}")
PY
fi

# the base model: Multi30k en->fr, 400 updates of the default model
[ -f "$OUT/base/best.pt" ] || python -m mtkit.train data=multi30k data.dir="$M" \
    data.src_lang=en data.tgt_lang=fr train.max_steps=400 train.precision=fp32 \
    train.processes=1 train.threads=1 \
    hydra.run.dir="$OUT/base"

# fine-tuned on the 5,000 pairs: the base's weights and subwords, a fresh optimizer
[ -f "$OUT/tuned/best.pt" ] || python -m mtkit.train data=tatoeba_en_fr data.dir="$T" \
    train.init_from="$OUT/base/best.pt" train.lr=0.0005 train.max_steps=300 \
    train.valid_every=30 train.patience=4 train.precision=fp32 train.test_at_end=false \
    train.processes=1 train.threads=1 \
    hydra.run.dir="$OUT/tuned"

for model in base tuned; do
    for domain in multi30k tatoeba; do
        src=$([ $domain = multi30k ] && echo "$M/test2016.en" || echo "$T/test.en")
        [ -f "$OUT/$model.$domain.fr" ] || python -m mtkit.translate "$OUT/$model/best.pt" \
            -i "$src" -o "$OUT/$model.$domain.fr" --beam-size 5
    done
done
for domain in multi30k tatoeba; do
    ref=$([ $domain = multi30k ] && echo "$M/test2016.fr" || echo "$T/test.fr")
    echo "== $domain: tuned against base"
    python -m mtkit.evaluate --hyp "$OUT/tuned.$domain.fr" --ref "$ref" \
        --baseline "$OUT/base.$domain.fr" --metrics bleu chrf
done
