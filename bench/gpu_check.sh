#!/usr/bin/env bash
# The CUDA paths, run once on a GPU machine (never in CI): DeepFM one epoch on the 1M-row CTR table of
# bench/bench_train.py on 1 and 2 GPUs (nccl), embed 1M items, exact retrieval 10k users x 1M items.
# Prints each command's summary table (throughput) and a JSON line per step to bench/results/gpu_check.jsonl.
#
#   bash bench/gpu_check.sh            # from the repository root, after `make install`
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RT="$PY -m rectool"
OUT=${OUT:-bench/.data/gpu_check}
mkdir -p "$OUT" bench/results
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
[ "$GPUS" -ge 1 ] || { echo "gpu_check: no CUDA device visible to torch; nothing to check" >&2; exit 1; }
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

step() {  # name, then the command; wall seconds into the JSON lines
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  "$@"
  local t1; t1=$(date +%s.%N)
  echo "{\"step\": \"$name\", \"wall_s\": $(echo "$t1 - $t0" | bc)}" | tee -a bench/results/gpu_check.jsonl
}

# the CTR table and the two-tower export of bench_distributed.py (made on the CPU, once)
$PY - <<'EOF'
import sys
sys.path.insert(0, "bench")
from pathlib import Path
import yaml
import bench_distributed as b
from bench_train import rectool_config
from common import DATA
meta, data = b.ctr_table(1_000_000)
for n in (1, 2):
    cfg = rectool_config(meta, data, DATA / "gpu_check" / f"deepfm_{n}gpu", "sparse_adam", "auto")
    Path(DATA / "gpu_check" / f"deepfm_{n}gpu.yaml").write_text(yaml.safe_dump(cfg))
b.tower_export(1_000_000, DATA / "distributed_bench")
EOF
TOWER=bench/.data/distributed_bench/tower_1000000

rm -rf "$OUT"/deepfm_1gpu "$OUT"/emb "$OUT"/recalls
step train_deepfm_1gpu $RT train -c "$OUT/deepfm_1gpu.yaml" --device cuda
grep '"kind": "train"' "$OUT/deepfm_1gpu/metrics.jsonl" | tail -1
if [ "$GPUS" -ge 2 ]; then
  rm -rf "$OUT"/deepfm_2gpu
  step train_deepfm_2gpu $RT train -c "$OUT/deepfm_2gpu.yaml" --device cuda --nproc 2
  grep '"kind": "train"' "$OUT/deepfm_2gpu/metrics.jsonl" | tail -1
fi
step embed_1m_items $RT embed --model "$TOWER/export" --items "$TOWER/items" -o "$OUT/emb" --device cuda
$PY -c "import pyarrow.parquet as pq; pq.write_table(pq.read_table('$TOWER/users').slice(0, 10000), '$OUT/users.parquet')"
step brute_10k_users_1m_items $RT retrieve --method brute --model "$TOWER/export" --items "$OUT/emb" \
  --users "$OUT/users.parquet" --topk 200 --keep-seen --batch-size 2048 -o "$OUT/recalls" --device cuda
