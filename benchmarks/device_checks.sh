#!/usr/bin/env bash
# What a short lease of a GPU machine is for, the parts chosen to fit it
# (run_all.sh, the full set, takes longer than one lease allows; parts 1-5
# took about 9 minutes on an H200 on 2026-12-04):
#
#   1. the mini-batch-10 throughput target on two CPU cores under that
#      machine's own (newer) jaxlib: train_throughput.py pinned to two cores
#      (CPUs 0 and 1) and JAX_PLATFORMS=cpu, torch and the NumPy loop pinned
#      with it, plus the step's breakdown. Does a later jaxlib close the gap?
#   2. XLA's command buffers (CUDA graphs) for fbp's GPU epochs: its default,
#      none, and the loop's own body captured too (WHILE, CONDITIONAL);
#   3. the test suite on the GPU (XLA_PYTHON_CLIENT_PREALLOCATE=false, so the
#      workers share the card);
#   4. the tests of a resumed run against an uninterrupted one, bitwise, in
#      separate processes (they pass fbp train --deterministic);
#   5. two processes of one run started on the one GPU (fbp's one-line error);
#   6. per_example.py's second network alone ([784, 1024×4, 10]), which has
#      run past 150 s on a GPU: its first calls print as they finish, under
#      XLA's defaults and with its autotuner off;
#   7. what dropout costs fbp's GPU epochs (the masks' random bits drawn on
#      the GPU), beside the plain epochs in the same rounds;
#   8. the convolutional nets' epochs (conv_throughput.py, the book's first
#      and second: hand-written against jax.grad's gradient, on the GPU);
#   9. XLA's compile time on the GPU against the step it gives
#      (compile_time.py), and on two of the host's cores under the machine's
#      jaxlib, beside the CPU figures of the README's jax-release table;
#  10. influence functions on the GPU (influence.py: fbp's outer products
#      against vmap(jax.grad)'s gradients, 10,000 training images against 100;
#      and the book's first conv net, KFC's factors, 5,000 against 100).
#
#   [PARTS="1 2 6"] benchmarks/device_checks.sh OUT_DIR [FASHION_MNIST_DIR]
#
# PARTS picks parts (default: 1 to 5). Each part has its own time limit; a
# failed part does not stop the rest. Uses `python3` from PATH unless PYTHON
# is set.
set -uo pipefail
out=${1:?usage: benchmarks/device_checks.sh OUT_DIR [FASHION_MNIST_DIR]}
fashion=${2:-}
py=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
log="$out/device_checks.log"
export PYTHONUNBUFFERED=1

source "$here/_part.sh"
parts=" ${PARTS:-1 2 3 4 5} "
want() { [[ $parts == *" $1 "* ]]; }

: >"$log"
part device 30 "$py" -c 'import jax, jaxlib, os; d = jax.devices()[0]; print(f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, {len(jax.devices())} x {d.platform} ({d.device_kind}), {os.cpu_count()} CPUs")'
command -v nvidia-smi >/dev/null && part nvidia-smi 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
part lscpu 10 bash -c 'lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|NUMA node|L2|L3"'

# 1. two CPU cores, this machine's jaxlib
# (the affinity is set from Python, so that no taskset is needed; XLA, torch and
# OpenBLAS size their thread pools from it)
pin2=("$py" -c 'import os, sys; os.sched_setaffinity(0, {0, 1}); os.execvp(sys.argv[1], sys.argv[1:])')
want 1 && part cpu2-throughput 150 env JAX_PLATFORMS=cpu "${pin2[@]}" "$py" "$here/train_throughput.py" --repeats 3 \
    --numpy-examples 5000 --breakdown --json "$out/train_throughput_cpu2.json" ${fashion:+--data-dir "$fashion"}

# 2. command buffers on the GPU, fbp's epochs alone
want 2 && for cb in "" "=" "=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL"; do
    part "gpu-epochs command_buffer${cb:-(default)}" 50 env XLA_FLAGS="${cb:+--xla_gpu_enable_command_buffer$cb}" \
        "$py" "$here/train_throughput.py" --fbp-only --repeats 3 ${fashion:+--data-dir "$fashion"}
done

# 3. the test suite on the GPU
want 3 && part gpu-tests 290 env XLA_PYTHON_CLIENT_PREALLOCATE=false "$py" -m pytest -q -n 12 -p no:cacheprovider \
    --timeout 150 -o addopts= -rfE --tb=short --durations=25 tests

# 4. resumed runs bitwise, across processes (on 2026-12-04, under XLA's
#    defaults, 1 of 2 failed; with --xla_gpu_deterministic_ops=true or
#    --xla_gpu_autotune_level=0, 2 of 2 passed: the tests now set the first,
#    through fbp train --deterministic, which this part is the first to try on a GPU)
want 4 && part gpu-resume-bitwise 150 env XLA_PYTHON_CLIENT_PREALLOCATE=false "$py" -m pytest -q -n 4 \
    -p no:cacheprovider -o addopts= -rfE tests/test_checkpoints.py -k "bitwise and (kill or damaged)"

# 5. two processes of one run on the one GPU: each should end with fbp's one-line error
want 5 && part gpu-shared 60 env XLA_PYTHON_CLIENT_PREALLOCATE=false PY="$py" bash -c '
    port=$("$PY" -c "import socket; s = socket.socket(); s.bind((\"localhost\", 0)); print(s.getsockname()[1])")
    for p in 0 1; do
        ("$PY" -m fbp train --coordinator localhost:$port --num-processes 2 --process-id $p --epochs 1 \
            --join-timeout 30 2>&1 | grep "^fbp train: error"; echo "process $p: exit ${PIPESTATUS[0]}") &
    done; wait'
# 6. per_example's second network, its first calls timed one by one: under
#    XLA's defaults, then with its autotuner off (if the time goes to
#    autotuning the vmap route's batched products, the second run says so)
for at in "" "--xla_gpu_autotune_level=0"; do
    want 6 && part "per-example-second ${at:-(defaults)}" 150 env XLA_FLAGS="$at" \
        "$py" "$here/per_example.py" --cases 1 --rounds 3 --no-memory --out "$out"
done
# 7. dropout's epochs beside the plain ones, on the GPU
want 7 && part gpu-dropout 60 "$py" "$here/train_throughput.py" --fbp-only --dropout 0.5 --repeats 3 \
    --json "$out/train_throughput_dropout_gpu.json" ${fashion:+--data-dir "$fashion"}
want 8 && part gpu-conv 120 "$py" "$here/conv_throughput.py" --repeats 3 --json "$out/conv_throughput_gpu.json" \
    ${fashion:+--data-dir "$fashion"}
want 8 && part gpu-conv-second-net 120 "$py" "$here/conv_throughput.py" --conv 20:5:2,40:5:2 --repeats 3 \
    --json "$out/conv_throughput_second_net_gpu.json" ${fashion:+--data-dir "$fashion"}
want 9 && part gpu-compile-time 90 "$py" "$here/compile_time.py" --json "$out/compile_time_gpu.json"
want 9 && part cpu2-compile-time 90 env JAX_PLATFORMS=cpu "${pin2[@]}" "$py" "$here/compile_time.py" \
    --json "$out/compile_time_cpu2.json"
want 10 && part gpu-influence 90 "$py" "$here/influence.py" --json "$out/influence_gpu.json" \
    ${fashion:+--data-dir "$fashion"}
want 10 && part gpu-influence-conv 150 "$py" "$here/influence.py" --conv --train 5000 \
    --json "$out/influence_conv_gpu.json" ${fashion:+--data-dir "$fashion"}
echo "=== done" | tee -a "$log"
