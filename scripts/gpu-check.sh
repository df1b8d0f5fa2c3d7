#!/usr/bin/env bash
# One short check of the GPU path (burn's wgpu backend): prints the adapter, runs the golden cases
# on it (CIM_TEST_DEVICE=gpu), and times the ResNet-20 train step (floating point and column/column
# P3 differential, batch 256) in images/s on the GPU against the CPU path.
#
#   scripts/gpu-check.sh                 in a checkout with cargo: builds with --features gpu, checks
#   scripts/gpu-check.sh --pack DIR      builds here and packs DIR for a GPU machine without
#                                        registry access: the stripped xtask, the golden test
#                                        binary, the golden cases, Debian's libvulkan1 and this
#                                        script; there, run `DIR/gpu-check.sh`
#
# Environment: GPU_CHECK_BATCH (256), GPU_CHECK_STEPS (3), GOLDEN (folder of golden cases; default
# ../shared/golden, or DIR/golden in a pack). Without a GPU the adapter is Mesa's llvmpipe (OpenGL,
# on the CPU): the check still proves the path works, but its times say nothing about a GPU.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
batch="${GPU_CHECK_BATCH:-256}"
steps="${GPU_CHECK_STEPS:-3}"

# The golden test binary that cargo built last for `cargo test -p cim-core --features gpu`.
golden_binary() {
    cargo test --release -p cim-core --features gpu --test golden --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "golden" and m.get("executable"):
        print(m["executable"])'
}

# Finds the Vulkan loader of a pack and the NVIDIA driver's ICD when the loader would not.
use_pack_vulkan() {
    if [ -d "$here/vulkan" ]; then
        export LD_LIBRARY_PATH="$here/vulkan/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
    if [ -z "${VK_DRIVER_FILES:-}" ]; then
        for icd in /usr/share/vulkan/icd.d/nvidia_icd.json /etc/vulkan/icd.d/nvidia_icd.json \
            /usr/share/vulkan/icd.d/nvidia_icd.x86_64.json; do
            if [ -f "$icd" ]; then
                export VK_DRIVER_FILES="$icd"
                break
            fi
        done
    fi
}

run_checks() {
    local xtask="$1" golden_bin="$2" golden_dir="$3"
    if command -v nvidia-smi >/dev/null; then
        echo "== nvidia-smi"
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    fi
    echo "== golden cases on the GPU ($golden_dir; the adapter is the test device)"
    CIM_TEST_DEVICE=gpu CIM_GOLDEN_DIR="$golden_dir" "$golden_bin" --nocapture
    echo "== ResNet-20 train step, batch $batch"
    "$xtask" speed --devices cpu,gpu --batch "$batch" --steps "$steps"
}

case "${1:-}" in
--pack)
    out="${2:?--pack DIR: expected the folder to pack into}"
    mkdir -p "$out/bin"
    out="$(cd "$out" && pwd)"
    cd "$here/.."
    cargo build --release -p xtask --features gpu
    cp target/release/xtask "$out/bin/xtask"
    cp "$(golden_binary)" "$out/bin/golden"
    strip "$out/bin/xtask" "$out/bin/golden"
    cp -r "${GOLDEN:-../shared/golden}" "$out/golden"
    (cd "$out" && apt-get download libvulkan1 && dpkg -x libvulkan1_*.deb vulkan)
    cp "$here/gpu-check.sh" "$out/gpu-check.sh"
    echo "packed into $out ($(du -sh "$out" | cut -f1)); on the GPU machine: $out/gpu-check.sh"
    ;;
"")
    if [ -x "$here/bin/xtask" ]; then # a pack
        use_pack_vulkan
        run_checks "$here/bin/xtask" "$here/bin/golden" "${GOLDEN:-$here/golden}"
    else
        cd "$here/.."
        cargo build --release -p xtask --features gpu
        run_checks target/release/xtask "$(golden_binary)" "${GOLDEN:-../shared/golden}"
    fi
    ;;
*)
    echo "usage: $0 [--pack DIR]" >&2
    exit 2
    ;;
esac
