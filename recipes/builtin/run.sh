#!/usr/bin/env bash
# The built-in default model, reproduced with the project's own commands (CPU; resumable: rerun to continue).
#   bash recipes/builtin/run.sh            # everything, into runs/builtin, then src/infinitystar/assets/default
# Each step skips itself when its output exists; a killed training step continues with --resume.
set -euo pipefail
cd "$(dirname "$0")/../.."
R=runs/builtin
mkdir -p $R
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # 2 threads on 2 busy cores is slower than 1 (OpenMP waits)

resume() { [ -d "$1/checkpoints" ] || ls -d "$1"/step_* >/dev/null 2>&1 && echo --resume || true; }
# a finished tokenizer run: its VAE folder (runs made before VAE folders wrote RUN/vae.safetensors)
trained() { [ -f "$1/vae/model.safetensors" ] || [ -f "$1/vae.safetensors" ]; }

# 1. the procedural world: 4000 training items each (15% still images), captions by the world grammar. The model's
#    world (the package default: objects 34-48 % of the frame) and a small-object world (18-30 %) for the first stage
#    of the curriculum below (the recipe's first version trained on it alone; shape did not survive 2-token objects)
SMALL="--size-range 0.18 0.30 --travel-range 0.30 0.50"
[ -f $R/world_small/manifest.jsonl ] || infinitystar world write --out $R/world_small -n 4000 --split train \
    --frames 17 --size 128 --seed 0 --image-fraction 0.15 $SMALL
[ -f $R/world_train/manifest.jsonl ] || infinitystar world write --out $R/world_train -n 4000 --split train \
    --frames 17 --size 128 --seed 0 --image-fraction 0.15

# 2. tokenizer, knowledge inheritance: a continuous VAE (64x64 5-frame small-object clips), then the bitwise
#    quantizer in the loop at the model's size (128x128, 9 frames, the model's 8-scale pyramid): 250 steps on small
#    objects, then 1200 on the model's world
trained $R/vae_continuous || infinitystar train-tokenizer --no-progress \
    --config recipes/builtin/tokenizer_continuous.json --out $R/vae_continuous $(resume $R/vae_continuous)
trained $R/vae_quantized_small || infinitystar train-tokenizer --no-progress \
    --config recipes/builtin/tokenizer_quantized.json --init $R/vae_continuous --out $R/vae_quantized_small \
    $(resume $R/vae_quantized_small)
trained $R/vae_quantized || infinitystar train-tokenizer --no-progress \
    --config recipes/builtin/tokenizer_quantized_large.json --init $R/vae_quantized_small --out $R/vae_quantized \
    $(resume $R/vae_quantized)

# 2a. the decoder alone on the fixed tokens of vae_quantized (freeze "tokens": encoder, projection and latent scale
#     stay, so the latent cache below and the transformer trained on it stay valid): 17-frame clips as generated,
#     the posterior mean at full pyramid depth as the cache holds, an L2 loss (what PSNR measures); 3000 steps
#     (~50 min), then a second cosine cycle of 2000 steps at a lower peak on new clips (~35 min)
trained $R/vae_decoder || infinitystar train-tokenizer --no-progress \
    --config recipes/builtin/tokenizer_decoder.json --init $R/vae_quantized --out $R/vae_decoder \
    $(resume $R/vae_decoder)
trained $R/vae_decoder_long || infinitystar train-tokenizer --no-progress \
    --config recipes/builtin/tokenizer_decoder.json --init $R/vae_decoder --out $R/vae_decoder_long \
    --steps 2000 --set optim.lr=3e-5 --set seed=4 --set data.seed=4 $(resume $R/vae_decoder_long)

# 2b. the comparison: the compute budget of continuous + 250 quantized steps, trained from scratch with the
#     quantizer in the loop (compare with vae_quantized_small: same world, same budget)
trained $R/vae_scratch || infinitystar train-tokenizer --no-progress \
    --config recipes/builtin/tokenizer_quantized.json --from-scratch --steps 540 --out $R/vae_scratch \
    $(resume $R/vae_scratch)

# 3. latent caches of the world clips (posterior mean: deterministic tokens), one per stage
infinitystar extract --manifest $R/world_small/manifest.jsonl --vae $R/vae_quantized_small \
    --resolution 0.016M --max-frames 17 --min-frames 17 --posterior mean --out $R/cache_small --quiet
infinitystar extract --manifest $R/world_train/manifest.jsonl --vae $R/vae_quantized \
    --resolution 0.016M --max-frames 17 --min-frames 17 --posterior mean --out $R/cache --quiet

# 4. the transformer (small preset, built-in text encoder, bitwise self-correction), first on the small-object cache
SMALLCACHE="--set data.cache=$R/cache_small"
[ -d $R/transformer/final ] || infinitystar train --config recipes/builtin/transformer.json --no-progress \
    $SMALLCACHE $(resume $R/transformer)

# 4a. more of the same: continue from the 1000-step model (its weights, a fresh optimizer and a second
#     cosine cycle at half the peak rate); resumable like every step
[ -d $R/transformer_long/final ] || infinitystar train --config recipes/builtin/transformer.json --no-progress \
    --init $R/transformer/final --out $R/transformer_long --steps ${LONG_STEPS:-3000} \
    --set optim.lr=0.0005 --set optim.warmup_steps=50 --set save_every=100 $SMALLCACHE $(resume $R/transformer_long)

# 4b. the model's world: continue from 4a on the cache of the final tokenizer (new latents of larger objects)
[ -d $R/transformer_objects/final ] || infinitystar train --config recipes/builtin/transformer.json --no-progress \
    --init $R/transformer_long/final --out $R/transformer_objects --steps ${OBJECT_STEPS:-2000} \
    --set optim.lr=0.0005 --set optim.warmup_steps=50 --set save_every=100 $(resume $R/transformer_objects)

# 4c. the ablation of bitwise self-correction: the same smaller budget with and without it (small-object stage)
for run in bsc_small:0.3 nobsc:0; do
    name=${run%%:*}; strength=${run##*:}
    [ -d $R/transformer_$name/final ] || infinitystar train --config recipes/builtin/transformer.json --no-progress \
        --out $R/transformer_$name --steps 600 --set loss.self_correction=$strength $SMALLCACHE \
        $(resume $R/transformer_$name)
    [ -f $R/transformer_${name}_model/model_index.json ] || infinitystar assemble \
        --transformer $R/transformer_$name/final --vae $R/vae_quantized_small --text-encoder builtin \
        --pipeline-config recipes/builtin/pipeline.json --out $R/transformer_${name}_model
done

# 4d. the same ablation on the model's world (the cache of the shipped tokenizer)
for run in world_bsc:0.3 world_nobsc:0; do
    name=${run%%:*}; strength=${run##*:}
    [ -d $R/transformer_$name/final ] || infinitystar train --config recipes/builtin/transformer.json --no-progress \
        --out $R/transformer_$name --steps 600 --set loss.self_correction=$strength --set save_every=100 \
        $(resume $R/transformer_$name)
    [ -f $R/transformer_${name}_model/model_index.json ] || infinitystar assemble \
        --transformer $R/transformer_$name/final --vae $R/vae_quantized --text-encoder builtin \
        --pipeline-config recipes/builtin/pipeline.json --out $R/transformer_${name}_model
done

# 5. the model folder shipped in the package (fp16 storage); its tokenizer is vae_decoder_long (the tokens of
#    vae_quantized, on which the cache and the transformer were made)
infinitystar assemble --transformer $R/transformer_objects/final --vae $R/vae_decoder_long --text-encoder builtin \
    --pipeline-config recipes/builtin/pipeline.json --out src/infinitystar/assets/default --dtype fp16

# 6. evaluation: one table (tokenizer PSNR, prompt following on held-out and seen combinations, the ablation, time),
#    the figure of generated shapes, and the loss curves kept in the repository
python recipes/builtin/report.py --runs $R --model src/infinitystar/assets/default | tee recipes/builtin/curves/report.txt
python recipes/builtin/curves.py --runs $R --out recipes/builtin/curves
