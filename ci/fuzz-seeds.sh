#!/usr/bin/env bash
#! Regenerates the committed seed corpora (fuzz/corpus/TARGET/seed-*).
#!
#! Targets whose input is a plain format (api_request, cli_args,
#! kernel_loader, initrd_placement) get hand-made seeds from fuzz/seeds.py:
#! real API requests and command lines, tiny bzImage/ELF/PVH/arm64 Image
#! files, typical initrd placements.
#!
#! Targets whose input is `arbitrary`-structured (the virtio, mmio and
#! legacy device targets) have no hand-writable format: their seeds are
#! picked from the working corpus a fuzzing run left in fuzz/corpus/TARGET/
#! (run ci/fuzz.sh first). The corpus is minimized (libFuzzer -merge=1)
#! and five inputs spread over its size range (at most 64 KiB each) are
#! kept as seed-SHA1.
#!
#! Usage: ci/fuzz-seeds.sh [TARGET...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

plain=(api_request cli_args kernel_loader initrd_placement)
python3 fuzz/seeds.py

targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(ls fuzz/fuzz_targets | sed 's/\.rs$//')
bin_dir="fuzz/target/$(uname -m)-unknown-linux-gnu/release"
for target in "${targets[@]}"; do
    [[ " ${plain[*]} " == *" $target "* ]] && continue
    corpus="fuzz/corpus/$target"
    [ -x "$bin_dir/$target" ] || { echo "seeds: build first (ci/fuzz.sh --build-only)" >&2; exit 2; }
    [ -n "$(ls -A "$corpus" 2>/dev/null)" ] || { echo "seeds: $target: no corpus, skipped" >&2; continue; }
    merged=$(mktemp -d)
    (cd "$merged" && nice -n 10 "$ROOT/$bin_dir/$target" -merge=1 "$merged" "$ROOT/$corpus" >/dev/null 2>&1)
    mapfile -t files < <(find "$merged" -maxdepth 1 -type f -size -65537c -printf '%s %p\n' |
        sort -n | cut -d' ' -f2-)
    count=${#files[@]}
    if [ "$count" -gt 0 ]; then
        rm -f "$corpus"/seed-*
        for quantile in 10 30 50 70 90; do
            file=${files[$((count * quantile / 100))]}
            cp "$file" "$corpus/seed-$(basename "$file")"
        done
    fi
    rm -rf "$merged"
    echo "seeds: $target: $(ls "$corpus"/seed-* 2>/dev/null | wc -l) seeds from $count minimized inputs" >&2
done
