# Issue #7's acceptance rows for this code in two device calls (each < 600 s), for the first H100 it meets, or to
# repeat them on any GPU: `bash bench/acceptance.sh A`, then `bash bench/acceptance.sh B` (carry .whl: bench/NOTES.md
# "Device runs"). Results land in $OUT as JSON lines; the printed lines are what goes into bench/results.
# Do not pipe `source bench/gpu_env.sh` (a pipe runs it in a subshell, which leaves PYTHONPATH unset).
source bench/gpu_env.sh > /tmp/env.txt 2>&1; tail -2 /tmp/env.txt
python3 -c "import rwkv_peft" || exit 1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
t() { echo "== $(date +%T) $*"; }
last() { tail -1 "$1" | cut -c1-330; }
C="timeout 100 python3 bench/cli_bench.py --ctx 1024 --bsz 1 --steps 30 --warmup 10 --out $OUT/cli.jsonl"
if [ "$1" = A ]; then   # ~500 s: the 1024 x 1 rows (anchor: LoRA 3.8 / 10.9 GiB, cp1 3.1 / 7.2, MiSS 4.9, 0.1B 7.3)
  for m in lora miss pissa; do t $m; $C --model 1.5b --method $m train_parts=ln > /tmp/$m.txt 2>&1; last /tmp/$m.txt; done
  t state; $C --model 1.5b --method state > /tmp/state.txt 2>&1; last /tmp/state.txt    # the state alone trains
  t lora-again; $C --model 1.5b --method lora train_parts=ln > /tmp/l2.txt 2>&1; last /tmp/l2.txt
  t lora-cp1; $C --model 1.5b --method lora train_parts=ln grad_cp=1 > /tmp/cp1.txt 2>&1; last /tmp/cp1.txt
  t lora-0.1b; $C --model 0.1b --method lora train_parts=ln > /tmp/s.txt 2>&1; last /tmp/s.txt
  t mfu-4096x8; timeout 120 python3 bench/train_bench.py --models 1.5b --methods lora --shapes 4096x8 --grad-cp 0 \
      --modes compile+graph --op triton --out $OUT/tb.jsonl > /tmp/tb.txt 2>&1; tail -2 /tmp/tb.txt
else                    # ~560 s: the peer (fla's first-use autotuning ~300 s) and ctx 65536
  t peer; timeout 420 python3 bench/train_bench.py --models 1.5b --methods lora --shapes 1024x1 --peer \
      --modes compile+graph --op triton --out $OUT/peer.jsonl > /tmp/peer.txt 2>&1; tail -3 /tmp/peer.txt
  t ctx65536; timeout 130 python3 bench/train_bench.py --models 1.5b --methods lora --shapes 65536x1 --grad-cp 1 \
      --modes compile+graph --op triton --warmup 1 --steps 2 --out $OUT/long.jsonl > /tmp/long.txt 2>&1; tail -2 /tmp/long.txt
fi
t end
