#!/usr/bin/env bash
# Teach the built-in model a colour it has never seen, pink (255, 105, 180), with a LoRA adapter; CPU, resumable.
#   bash recipes/lora_pink/run.sh              # into runs/lora_pink, then recipes/lora_pink/adapter and curves/
#   REPORT=0 bash recipes/lora_pink/run.sh     # train only (no evaluation)
# Each step skips itself when its output exists; a killed training step continues with --resume. Needs peft
# (pip install -e ".[lora]"); the built-in model itself is not changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
R=${RUNS:-runs/lora_pink}
mkdir -p "$R"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # 2 threads on 2 busy cores is slower than 1 (OpenMP waits)

resume() { [ -d "$1/checkpoints" ] || ls -d "$1"/step_* >/dev/null 2>&1 && echo --resume || true; }
CLIPS="--frames 17 --size 128 --image-fraction 0.15"

# 1. data: pink clips of pink's 10 training shape-motion combinations (its other 5 are held out, see
#    world/scenes.py NEW_COLOR_HELDOUT), and default-world clips replayed so that the adapter keeps what the model
#    knows (DreamBooth's prior preservation)
[ -f "$R/world_pink/manifest.jsonl" ] || infinitystar world write --out "$R/world_pink" -n 400 --colors pink \
    --split train --seed 22 $CLIPS
[ -f "$R/world_replay/manifest.jsonl" ] || infinitystar world write --out "$R/world_replay" -n 400 \
    --split train --seed 23 $CLIPS

# 2. tokens for pink: the built-in encoder never saw pink and maps it to a peach the evaluator reads as pink only
#    part of the time, although the built-in decoder can draw pink. An encoder for that same decoder ("freeze":
#    ["decoding"]: decoder, projection and latent scale fixed) learns pink on small pink clips; it only makes the
#    pink training tokens (the built-in model's own tokenizer is untouched)
[ -f "$R/encoder/vae/model.safetensors" ] || infinitystar train-tokenizer --no-progress \
    --config recipes/lora_pink/encoder.json --init src/infinitystar/assets/default --out "$R/encoder" \
    $(resume "$R/encoder")

# 3. latent caches: pink clips through the new encoder, replayed clips through the built-in one (the tokens the
#    built-in model was trained on); both resumable
EXTRACT="--resolution 0.016M --max-frames 17 --min-frames 17 --posterior mean --quiet"
infinitystar extract --manifest "$R/world_pink/manifest.jsonl" --vae "$R/encoder" --out "$R/cache_pink" $EXTRACT
infinitystar extract --manifest "$R/world_replay/manifest.jsonl" --vae src/infinitystar/assets/default \
    --out "$R/cache_replay" $EXTRACT

# 4. the adapter: rank 16 on every linear of the 4 blocks, on the frozen built-in transformer (--init builtin),
#    half pink, half replay
[ -d "$R/lora/final" ] || infinitystar train --config recipes/lora_pink/lora.json --no-progress --out "$R/lora" \
    --set "data.cache=[\"$R/cache_pink\", \"$R/cache_replay\"]" $(resume "$R/lora")

# 5. ship it, with the curves of both trainings
rm -rf recipes/lora_pink/adapter && cp -r "$R/lora/final" recipes/lora_pink/adapter
python recipes/lora_pink/curves.py --runs "$R" --out recipes/lora_pink/curves

# 6. the README's table (infinitystar evaluate with and without the adapter)
if [ "${REPORT:-1}" != 0 ]; then
    python recipes/lora_pink/report.py --runs "$R" --adapter recipes/lora_pink/adapter \
        | tee recipes/lora_pink/curves/report.txt
fi
