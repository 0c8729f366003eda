#!/usr/bin/env bash
# One GPU session's checks and measurements, in order, within a time budget (default 8 minutes):
#
#   1. nvidia-smi, and a probe: a bf16 training step, the SDPA backend, the LSTM dtype under
#      autocast, the RNG round trip through a saved and loaded checkpoint, sustained matmul TFLOP/s
#   2. pytest -m gpu
#   3. a CUDA run killed (SIGKILL) after its first checkpoint and resumed, against an uninterrupted one
#   4. eager vs train.compile=true: tokens/s and the number of graphs compiled
#   5. benchmarks/throughput.py: GPT-2 124M (768x12, T=1024, V=50257) and ~20M at the GPU demo's
#      shape (T=256, V=512), without and with compile (MFU against the datasheet peak)
#   6. benchmarks/packing.py: K = 4, 16, 32 packed ~1M and ~10M models against sequential runs
#   7. cuDNN LSTM throughput (benchmarks/throughput.py, lstm sizes)
#   8. a GPU ladder sized to the minutes left, a fitted law, and a checked forecast of a run with
#      ~10x the ladder's largest compute
#
# Every stage writes its table or log under OUT and one line to OUT/stages.md; a stage that
# would not fit in the time left is skipped (and says so), so the script ends on time.
#
# usage: benchmarks/gpu_check.sh [--out DIR] [--budget SECONDS] [--data DIR] [--dry-run] [--cpu-smoke]
#   --out DIR      where the tables go (default: $OUT, else ./gpu_check_out)
#   --budget S     seconds for the whole script (default 480)
#   --data DIR     a git-ignored folder holding the Wikipedia shards (wiki_en_2015.train.*.txt.zst)
#                  for the ladder; default: the built-in synthetic language (no tokenization to wait for)
#   --dry-run      print the stages and their commands; run nothing
#   --cpu-smoke    run every stage at toy sizes on the CPU: checks the commands, measures nothing
# Without a GPU (and neither --dry-run nor --cpu-smoke) it says so in one line and exits 3.
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
OUTDIR="${OUT:-$PWD/gpu_check_out}"
BUDGET=480
DATA=""
MODE=gpu
INTERNAL=""          # --internal-stage NAME: this script re-invoked to run one stage function under `timeout`
ARGS=("$@")

usage() { sed -n '/^# usage:/,/^# Without/p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "gpu_check: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a directory"; OUTDIR="$2"; shift 2 ;;
    --budget) [ $# -ge 2 ] || die "--budget needs a number of seconds"; BUDGET="$2"; shift 2 ;;
    --data) [ $# -ge 2 ] || die "--data needs a directory"; DATA="$2"; shift 2 ;;
    --dry-run) MODE=dry; shift ;;
    --cpu-smoke) MODE=smoke; shift ;;
    --internal-stage) INTERNAL="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$BUDGET" =~ ^[0-9]+$ ]] && [ "$BUDGET" -ge 60 ] || die "--budget must be a whole number of seconds >= 60, got '$BUDGET'"
if [ -n "$DATA" ]; then
  compgen -G "$DATA/wiki_en_2015.train.*.txt.zst" > /dev/null || die "--data $DATA holds no wiki_en_2015.train.*.txt.zst shards"
  DATA="$(cd "$DATA" && pwd)"
fi

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
if [ "$MODE" = gpu ]; then
  "$PY" -c "import torch" 2>/dev/null || { echo "gpu_check: $PY cannot import torch (set PYTHON=...); nothing measured" >&2; exit 3; }
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU visible to $PY (torch.cuda.is_available() is False); nothing measured" >&2
    exit 3
  fi
fi
mkdir -p "$OUTDIR" || die "cannot create $OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
START=${GPU_CHECK_START:-$(date +%s)}
export GPU_CHECK_START=$START
remaining() { echo $(( BUDGET - ($(date +%s) - START) )); }

# toy sizes for --cpu-smoke, real ones on the GPU
if [ "$MODE" = smoke ]; then
  DEV=cpu; SMOKE=1
  TP_124M=(--sizes gpt:64x1 --context 32 --vocab 256 --batch-tokens 512 --steps 2 --run-steps 4 --warmup 1 --device cpu)
  TP_20M=(--sizes gpt:64x2 --context 32 --vocab 128 --batch-tokens 512 --steps 2 --run-steps 4 --warmup 1 --device cpu)
  TP_LSTM=(--sizes lstm:64x2 --context 32 --vocab 128 --batch-tokens 512 --steps 2 --run-steps 4 --warmup 1 --device cpu)
  PK=(--shapes 1M --ks 2 --batch 2 --context 32 --steps 1 --repeats 1 --warmup 1 --device cpu)
  RUN=(model.width=32 model.depth=1 model.context=32 data.vocab_size=64 train.batch_tokens=512 eval.tokens=1024
       train.device=cpu train.threads=1)
  RUN_TOKENS=20480; CKPT_EVERY=10
else
  DEV=cuda; SMOKE=0
  TP_124M=(--sizes gpt:768x12 --context 1024 --vocab 50257 --vocab-pad 64 --head-dim 64 --batch-tokens 131072
           --micro-batch-tokens 32768 --dtype bfloat16 --steps 3 --run-steps 8 --warmup 1)
  TP_20M=(--sizes gpt:384x8 --context 256 --vocab 512 --vocab-pad 64 --head-dim 64 --batch-tokens 65536
          --dtype bfloat16 --steps 4 --run-steps 20 --warmup 1)
  TP_LSTM=(--sizes lstm:512x2,lstm:1024x2 --context 256 --vocab 512 --vocab-pad 64 --batch-tokens 65536
           --dtype bfloat16 --steps 3 --run-steps 10 --warmup 1)
  PK=(--shapes 1M 10M --ks 4 16 32 --batch 32 --context 128 --vocab 512 --steps 5 --repeats 3 --warmup 2)
  RUN=(model.width=256 model.depth=4 model.head_dim=64 model.context=256 model.vocab_pad_multiple=64
       data.vocab_size=512 train.batch_tokens=65536 eval.tokens=262144 train.device=cuda)
  RUN_TOKENS=26214400; CKPT_EVERY=100   # 400 steps
fi

if [ -z "$INTERNAL" ]; then
  echo "| stage | status | seconds | output |" > "$OUTDIR/stages.md"
  echo "|---|---|---|---|" >> "$OUTDIR/stages.md"
fi

# stage NAME MIN_SECONDS MAX_SECONDS COMMAND...: run COMMAND with a timeout of at most MAX_SECONDS
# (and of the time left minus a 10 s reserve); skip it when fewer than MIN_SECONDS are left.
stage() {
  local name="$1" min="$2" max="$3"; shift 3
  local left limit t0 rc status
  left=$(( $(remaining) - 10 ))
  if [ "$MODE" = dry ]; then
    printf '%-12s <= %4ss  %s\n' "$name" "$max" "$*"; return 0
  fi
  if [ "$left" -lt "$min" ]; then
    echo "| $name | skipped: ${left}s left, needs ${min}s | 0 | - |" >> "$OUTDIR/stages.md"
    echo "== $name: skipped (${left}s left, needs ${min}s)"; return 0
  fi
  limit=$(( left < max ? left : max ))
  echo "== $name (limit ${limit}s)"
  t0=$(date +%s)
  if declare -F "$1" > /dev/null; then   # a function of this script: run it in a fresh copy of the script
    set -- bash "$0" "${ARGS[@]}" --internal-stage "$1"
  fi
  timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$OUTDIR/$name.log" 2>&1
  rc=$?
  case $rc in 0) status=ok ;; 124|137) status="timed out" ;; *) status="exit $rc" ;; esac
  echo "| $name | $status | $(( $(date +%s) - t0 )) | $name.log |" >> "$OUTDIR/stages.md"
  tail -n 25 "$OUTDIR/$name.log"
  return 0
}

# ---- 1. the device and a probe ----------------------------------------------------------
probe() {
  if [ "$SMOKE" = 0 ]; then nvidia-smi || true; fi
  "$PY" - "$DEV" "$OUTDIR" <<'PYEOF'
import sys, tempfile, time
import torch
import torch.nn.functional as F
from models import ModelConfig, build_model
from train import checkpoint as ckpt
from train.loop import autocast

dev = torch.device(sys.argv[1]); out = sys.argv[2]
rows = [("torch", torch.__version__), ("device", torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu")]
cfg = ModelConfig(width=256, depth=2, head_dim=64, context=128, vocab_size=512, vocab_pad_multiple=64)
model = build_model(cfg).to(dev)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
idx = torch.randint(0, 512, (8, 129), device=dev)
seen = {}
def record(name):   # a forward hook that returns None leaves the output alone
    def hook(module, inputs, output):
        seen.setdefault(name, (output[0] if isinstance(output, tuple) else output).dtype)
    return hook
model.blocks[0].mlp.up.register_forward_hook(record("matmul"))
with autocast(dev, "bfloat16"):
    logits, _ = model(idx[:, :-1])
loss = F.cross_entropy(logits.float().flatten(0, 1), idx[:, 1:].flatten())
loss.backward(); opt.step()
rows.append(("bf16 step: matmul output dtype, loss", f"{seen['matmul']}, {loss.item():.4f}"))
if dev.type == "cuda":
    from torch.nn.attention import SDPBackend, sdpa_kernel
    q = torch.randn(8, 4, 128, 64, device=dev, dtype=torch.bfloat16)
    ok = []
    for b in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH):
        try:
            with sdpa_kernel(b):
                F.scaled_dot_product_attention(q, q, q, is_causal=True)
            ok.append(b.name)
        except RuntimeError:
            pass
    rows.append(("SDPA backends that run (first is used)", ", ".join(ok)))
lstm = build_model(ModelConfig(kind="lstm", width=256, depth=2, context=128, vocab_size=512)).to(dev)
lstm.lstm.register_forward_hook(record("lstm"))
with autocast(dev, "bfloat16"):
    lstm(idx[:, :-1])
rows.append(("LSTM recurrence dtype under bf16 autocast", str(seen["lstm"])))
with tempfile.TemporaryDirectory() as d:
    state = ckpt.rng_state()
    ckpt.save_checkpoint(f"{d}/step_00000001.pt", {"model": {}, "optimizer": {}, "step": 1, "data_index": 1, "rng": state})
    a = torch.rand(3, device=dev)
    ckpt.set_rng_state(ckpt.load_checkpoint(f"{d}/step_00000001.pt")["rng"])
    b = torch.rand(3, device=dev)
    rows.append(("RNG round trip through a checkpoint", "same draws" if torch.equal(a, b) else "DIFFERENT draws"))
n, reps = (8192, 50) if dev.type == "cuda" else (512, 3)
dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
x = torch.randn(n, n, device=dev, dtype=dt); y = torch.randn(n, n, device=dev, dtype=dt)
for _ in range(3):
    x @ y
best = float("inf")
for _ in range(3):
    if dev.type == "cuda": torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        x @ y
    if dev.type == "cuda": torch.cuda.synchronize()
    best = min(best, time.perf_counter() - t0)
rows.append((f"sustained {n}^3 matmul, {dt}", f"{2 * n ** 3 * reps / best / 1e12:.3g} TFLOP/s"))
table = "| probe | result |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
print(table)
open(f"{out}/probe.md", "w").write(table + "\n")
PYEOF
}

# ---- 3. kill -9 and resume on the device ----------------------------------------------------
kill_resume() {
  local run="$OUTDIR/kill_resume"
  rm -rf "$run"; mkdir -p "$run"
  local args=("${RUN[@]}" train.tokens=$RUN_TOKENS run.ckpt_every=$CKPT_EVERY eval.points=8 run.log_every=10)
  "$PY" -m train --quiet --out "$run/killed" "${args[@]}" & local pid=$!
  while [ ! -e "$run/killed/ckpt" ] || [ -z "$(ls "$run/killed/ckpt" 2>/dev/null | grep -E '^step_[0-9]+\.pt$')" ]; do
    kill -0 $pid 2>/dev/null || { echo "the run ended before its first checkpoint"; return 1; }
    sleep 0.2
  done
  sleep 1; kill -9 $pid; wait $pid 2>/dev/null
  echo "killed pid $pid after $(ls "$run/killed/ckpt" | tr '\n' ' ')"
  "$PY" -m train --quiet --out "$run/killed" "${args[@]}" || return 1
  "$PY" -m train --quiet --out "$run/straight" "${args[@]}" || return 1
  "$PY" - "$run" <<'PYEOF'
import json, sys
r = sys.argv[1]
a, b = (json.load(open(f"{r}/{n}/summary.json")) for n in ("killed", "straight"))
print(f"| run | status | steps | final val loss | dtype | tokens/s |\n|---|---|---|---|---|---|")
for n, s in (("killed and resumed", a), ("uninterrupted", b)):
    print(f"| {n} | {s['status']} | {s['steps']} | {s['final_val_loss']:.5f} | {s['dtype']} | {s['tokens_per_s']:,.0f} |")
print(f"\n|difference| of final val loss: {abs(a['final_val_loss'] - b['final_val_loss']):.2e}")
PYEOF
}

# ---- 4. eager vs compile ------------------------------------------------------------------------
compile_check() {
  "$PY" - "$OUTDIR" "${RUN[@]}" train.tokens=$RUN_TOKENS eval.points=4 <<'PYEOF'
import sys, tempfile
import torch._dynamo
from torch._dynamo.utils import counters
from train.api import train_run
from train.config import load_config
out, overrides = sys.argv[1], sys.argv[2:]
rows = []
for compile in (False, True):
    torch._dynamo.reset(); counters.clear()
    with tempfile.TemporaryDirectory() as d:
        s = train_run(load_config(None, overrides + [f"train.compile={compile}"]), f"{d}/run")
    rows.append((compile, s["tokens_per_s"], s["final_val_loss"], s["wall_time_s"], counters["stats"]["unique_graphs"]))
table = "| train.compile | tokens/s | final val loss | wall s | graphs compiled |\n|---|---|---|---|---|\n"
table += "\n".join(f"| {c} | {t:,.0f} | {v:.5f} | {w:.1f} | {g} |" for c, t, v, w, g in rows)
print(table); open(f"{out}/compile.md", "w").write(table + "\n")
PYEOF
}

# ---- 8. a ladder, a fit and a checked forecast, sized to the time left ----------------------------
ladder() {
  local left=$(( $(remaining) - 20 )) dir="$OUTDIR/ladder" data_yaml tpp max_params target_width
  rm -rf "$dir"; mkdir -p "$dir"
  if [ "$SMOKE" = 1 ]; then tpp="[1, 2]"; max_params=3.0e+4; target_width=64
  elif [ "$left" -gt 240 ]; then tpp="[5, 10, 20]"; max_params=1.2e+6; target_width=320
  else tpp="[5, 10, 20]"; max_params=4.0e+5; target_width=192; fi
  if [ -n "$DATA" ] && [ "$SMOKE" = 0 ]; then
    data_yaml="{source: '$DATA/wiki_en_2015.train.00.txt.zst', tokenizer: bpe, vocab_size: 8192}"
  else
    data_yaml="{source: synthetic, vocab_size: 512, seed: 0}"
  fi
  local batch=$([ "$SMOKE" = 1 ] && echo 512 || echo 16384) ctx=$([ "$SMOKE" = 1 ] && echo 32 || echo 128)
  cat > "$dir/gpu_check_ladder.yaml" <<EOF
name: gpu_check_ladder
description: a GPU ladder sized to the minutes left in benchmarks/gpu_check.sh
base:
  model: {kind: gpt, context: $ctx, head_dim: 16, vocab_pad_multiple: 64}
  data: $data_yaml
  train: {batch_tokens: $batch, device: $DEV}
  optim: {lr: 0.005}
  schedule: {kind: cosine, warmup_steps: 5}
  eval: {points: $( [ "$SMOKE" = 1 ] && echo 4 || echo 12 ), tokens: $( [ "$SMOKE" = 1 ] && echo 2048 || echo 32768 )}
  run: {flop_convention: exact}
family: ladder
n_params: non_embedding
sizes:
  ladder: {min_params: $( [ "$SMOKE" = 1 ] && echo 2.0e+3 || echo 5.0e+4 ), max_params: $max_params, n: $( [ "$SMOKE" = 1 ] && echo 3 || echo 4 )}
tokens_per_param: $tpp
executor: {jobs: 1, retries: 0}
EOF
  "$PY" -m testbed sweep run "$dir/gpu_check_ladder.yaml" --out "$dir/sweep" --pack 16 --quiet || return 1
  local calibrate=$([ "$SMOKE" = 1 ] || echo --calibrate)   # a toy ladder has too few runs to backtest
  "$PY" -m testbed fit "$dir/sweep" --law chinchilla --n-convention non_embedding --bootstrap 200 $calibrate \
      --out "$dir/fit.json" || return 1
  "$PY" - "$dir" "$target_width" <<'PYEOF'
import json, subprocess, sys
from pathlib import Path
from models.counting import flops_per_token, param_counts
from train.config import RunConfig
d, width = Path(sys.argv[1]), int(sys.argv[2])
runs = [json.load(open(p)) for p in d.glob("sweep/*/summary.json")]
cmax = max(r["tokens"] * r["flops_per_token"] for r in runs if r["status"] == "completed")
cfg = RunConfig.from_dict(json.load(open(next(d.glob("sweep/*/config.json")))))
cfg = cfg.with_overrides({"model.width": width, "model.depth": max(1, width // 64), "model.heads": 0,
                          "run.name": "target"})
n = param_counts(cfg.model)["non_embedding"]
tokens = int(10 * cmax / flops_per_token(cfg.model, "exact"))
tokens -= tokens % cfg.train.batch_tokens
cfg = cfg.with_overrides({"train.tokens": tokens})
pred = json.loads(subprocess.run([sys.executable, "-m", "testbed", "predict", str(d / "fit.json"), "--N", str(n),
                                  "--D", str(tokens), "--json"], check=True, capture_output=True, text=True).stdout)
(d / "target.json").write_text(json.dumps(cfg.to_dict()))
from train.api import train_run
s = train_run(cfg, d / "target")
inside = pred["lower"] <= s["final_val_loss"] <= pred["upper"]
table = ("| ladder runs | largest ladder C | target N | target D | C ratio | predicted | interval | actual | error | inside |\n"
         "|---|---|---|---|---|---|---|---|---|---|\n"
         f"| {len(runs)} | {cmax:.3g} | {n:,} | {tokens:,} | {tokens * flops_per_token(cfg.model, 'exact') / cmax:.1f}x "
         f"| {pred['loss']:.4f} | [{pred['lower']:.4f}, {pred['upper']:.4f}] | {s['final_val_loss']:.4f} "
         f"| {100 * (pred['loss'] - s['final_val_loss']) / s['final_val_loss']:+.2f}% | {inside} |")
print(table); (d.parent / "ladder.md").write_text(table + "\n")
PYEOF
}

if [ -n "$INTERNAL" ]; then
  declare -F "$INTERNAL" > /dev/null || die "no stage function '$INTERNAL'"
  "$INTERNAL"; exit $?
fi

SMOKE_SIZES="$( [ "$SMOKE" = 1 ] && echo "(toy sizes on the CPU: commands checked, nothing measured)" )"
echo "gpu_check: mode $MODE, budget ${BUDGET}s, data ${DATA:-synthetic}, tables under $OUTDIR $SMOKE_SIZES"
stage probe        10  60  probe
stage pytest_gpu   20  90  "$PY" -m pytest -q -m gpu -p no:cacheprovider tests
stage kill_resume  30  90  kill_resume
stage compile      30  90  compile_check
stage tp_124m      60 150  "$PY" benchmarks/throughput.py "${TP_124M[@]}"
stage tp_124m_c    60 150  "$PY" benchmarks/throughput.py "${TP_124M[@]}" --compile
stage tp_20m       30  90  "$PY" benchmarks/throughput.py "${TP_20M[@]}"
stage tp_20m_c     40 100  "$PY" benchmarks/throughput.py "${TP_20M[@]}" --compile
stage packing      30 120  "$PY" benchmarks/packing.py "${PK[@]}"
stage lstm         20  60  "$PY" benchmarks/throughput.py "${TP_LSTM[@]}"
stage ladder       60 600  ladder
[ "$MODE" = dry ] && exit 0

{
  echo "# gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ), budget ${BUDGET}s, mode $MODE $SMOKE_SIZES"
  echo; cat "$OUTDIR/stages.md"
  for t in probe compile ladder; do [ -f "$OUTDIR/$t.md" ] && { echo; echo "## $t"; cat "$OUTDIR/$t.md"; }; done
  for t in kill_resume tp_124m tp_124m_c tp_20m tp_20m_c packing lstm; do
    [ -f "$OUTDIR/$t.log" ] && { echo; echo "## $t"; grep -E '^\||^ *(shape|[0-9]+M)|difference|^device' "$OUTDIR/$t.log"; }
  done
} > "$OUTDIR/gpu_check.md"
echo "gpu_check: done in $(( $(date +%s) - START ))s; summary in $OUTDIR/gpu_check.md"
