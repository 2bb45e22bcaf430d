#!/usr/bin/env bash
# Every benchmark of the README, one after another, on this machine (CPU or
# GPU: jax's default device), preceded by `fbp check` on that device and
# followed by two `fbp train` runs timed end to end. Each part has its own
# time limit and a failed part does not stop the rest.
#
#   benchmarks/run_all.sh OUT_DIR [FASHION_MNIST_DIR]
#
# OUT_DIR gets run_all.log (everything printed, in order) and each
# benchmark's JSON; FASHION_MNIST_DIR holds Fashion-MNIST's IDX files
# (default: where Debian's package puts them; random inputs of the same shape
# when absent). QUICK=1 runs every part with few rounds, to try the script.
# Uses `python3` from PATH unless PYTHON is set.
set -uo pipefail
out=${1:?usage: benchmarks/run_all.sh OUT_DIR [FASHION_MNIST_DIR]}
fashion=${2:-}
py=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
log="$out/run_all.log"
export PYTHONUNBUFFERED=1
if [[ ${QUICK:-0} == 1 ]]; then r_tt=1 r_wide=1 r_grad=2 r_pe=1 r_ct=1 epochs=1 np_ex=500; else r_tt=5 r_wide=3 r_grad=30 r_pe=7 r_ct=3 epochs=10 np_ex=10000; fi

source "$here/_part.sh"

: >"$log"
part device 60 "$py" -c 'import jax, os; d = jax.devices()[0]; print(f"jax {jax.__version__}, {len(jax.devices())} x {d.platform} ({d.device_kind}), {os.cpu_count()} CPUs")'
command -v nvidia-smi >/dev/null && part nvidia-smi 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
part check-784-30-10 60 "$py" -m fbp check
part check-784-512-512-10 60 "$py" -m fbp check --sizes 784,512,512,10 --activation relu --output-activation softmax \
    --cost log_likelihood --init he --batch-size 256
part check-float32 60 "$py" -m fbp check --sizes 784,512,512,10 --activation relu --output-activation softmax \
    --cost log_likelihood --init he --batch-size 256 --dtype float32
part train_throughput 240 "$py" "$here/train_throughput.py" --repeats "$r_tt" --numpy-examples "$np_ex" \
    --json "$out/train_throughput.json" ${fashion:+--data-dir "$fashion"}
part conv_throughput 240 "$py" "$here/conv_throughput.py" --repeats "$r_tt" --json "$out/conv_throughput.json" \
    ${fashion:+--data-dir "$fashion"}
part conv_throughput_second_net 600 "$py" "$here/conv_throughput.py" --conv 20:5:2,40:5:2 --repeats "$r_tt" \
    --json "$out/conv_throughput_second_net.json" ${fashion:+--data-dir "$fashion"}
part grad_vs_autodiff 90 "$py" "$here/grad_vs_autodiff.py" --rounds "$r_grad" --json "$out/grad_vs_autodiff.json"
part progress 240 "$py" "$here/progress.py" --repeats "$r_tt" --wide-repeats "$r_wide" --json "$out/progress.json" \
    ${fashion:+--data-dir "$fashion"}
part compile_time 120 "$py" "$here/compile_time.py" --rounds "$r_ct" --json "$out/compile_time.json"
part trace_time 240 "$py" "$here/trace_time.py" --rounds "$r_ct" --json "$out/trace_time.json"
part train-digits 60 "$py" -m fbp train --metrics-out "$out/train_digits.jsonl"
if [[ -n $fashion ]]; then
    part train-fashion 90 "$py" -m fbp train --data fashion-mnist --data-dir "$fashion" --epochs "$epochs"
fi
platform=$("$py" -c 'import jax; print(jax.devices()[0].platform)' 2>/dev/null)
if [[ $platform == gpu ]]; then
    # fbp's epochs alone under XLA's command-buffer settings (CUDA graphs): its
    # default, none, and the loop's own body captured too (WHILE, CONDITIONAL),
    # against the launch cost of the small mini-batch-10 step
    for cb in "" "=" "=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL"; do
        part "fbp-epochs command_buffer${cb:-(default)}" 90 env XLA_FLAGS="${cb:+--xla_gpu_enable_command_buffer$cb}" \
            "$py" "$here/train_throughput.py" --fbp-only --repeats 3 ${fashion:+--data-dir "$fashion"}
    done
fi
# on a GPU machine the real devices; on a CPU, 8 forced host devices (parallel.py's default)
gpu_flag=()
[[ $platform == gpu ]] && gpu_flag=(--gpu)
part parallel 60 "$py" "$here/parallel.py" "${gpu_flag[@]}"
part influence 120 "$py" "$here/influence.py" --rounds "$r_pe" --json "$out/influence.json" \
    ${fashion:+--data-dir "$fashion"}
# the book's first conv net (KFC's factors); 5,000 training images: jax.grad's route holds 11.6 GB at them
part influence-conv 400 "$py" "$here/influence.py" --conv --train 5000 --rounds "$r_pe" \
    --json "$out/influence_conv.json" ${fashion:+--data-dir "$fashion"}
# last: on a GPU its second network has run past 150 s (first calls print as they finish)
part per_example 240 "$py" "$here/per_example.py" --rounds "$r_pe" --out "$out"
echo "=== done" | tee -a "$log"
