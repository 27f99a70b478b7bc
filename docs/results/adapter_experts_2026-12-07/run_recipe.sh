#!/bin/bash
# Study helper (docs/results/adapter_experts_2026-12-07.md): retrains only the adapter stage of a
# finished world_demo job on a fresh copy, then measures every expert with bit_experts.expert_quality.
# usage: SRC=runs/demo/upstream run_recipe.sh NAME [--set key=value ...]   (run from the repo root)
set -e
NAME=$1; shift
SRC=${SRC:?set SRC to a finished world_demo upstream work directory}
W=${OUT_ROOT:-/tmp/adapt}/$NAME
rm -rf $W; mkdir -p $W/models
cp $SRC/config.json $SRC/expert_domains.* $SRC/label_names.json $W/
for m in baseline expert_capital_letters expert_cyrillic expert_greek expert_latin expert_numerals expert_small_letters; do
  cp -r $SRC/models/$m $W/models/; done
# the copy's config.json carries the row's adapter settings (a changed config is refused once trained)
python - "$W/config.json" "$@" <<'PY'
import json, sys, ast
path, args = sys.argv[1], sys.argv[2:]
c = json.load(open(path))
sets = [a for a in args if a != "--set"]
for s in sets:
    k, v = s.split("=", 1)
    try: v = ast.literal_eval(v)
    except Exception: pass
    d = c; *ks, last = k.split(".")
    for x in ks: d = d.setdefault(x, {})
    d[last] = v
json.dump(c, open(path, "w"), indent=1)
PY
export PYTHONPATH=${PYTHONPATH:-$PWD}
start=$(date +%s)
python -m bit_experts.train --config=world_demo --workdir=$W --stages=adapter "$@" > $W/train.log 2>&1
end=$(date +%s)
echo "train_seconds $((end-start))" | tee $W/time.txt
python -m bit_experts.expert_quality --workdir=$W --images_per_class=10 --output_json=$W/quality.json > $W/quality.txt 2>&1
echo "eval_seconds $(( $(date +%s)-end ))" | tee -a $W/time.txt
grep -i "adapter" $W/quality.txt
