#!/usr/bin/env bash
#! The whole test suite, as CI runs it: host set-up, formatting and lints on
#! both targets, unit tests (aarch64 ones under qemu-user), the direct KVM
#! payload tests on this host's /dev/kvm, the static binaries, the API
#! driven by a third-party Firecracker client from PyPI and fuzzed by
#! schemathesis against tandem's and Firecracker's API descriptions, a short
#! run of every fuzz target, and the
#! end-to-end boots (directly on hardware KVM, else in emulated KVM hosts),
#! including a hostile guest attacking tandem beside a neighbour VM
#! (ci/hostile-e2e.sh), 10 VMs at once and a short crash-consistency soak
#! per arch, and kvm-unit-tests (ci/kvm-unit-tests.sh; rows of ci/e2e.sh),
#! each test that ci/kvm-unit-tests.expected lists required to pass.
#! Usage: ci/test.sh [--quick]   (--quick: everything but the end-to-end
#! boots and kvm-unit-tests)
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s\n' "$*"; }

step "host set-up"
bash ci/setup-host.sh

step "rustfmt"
cargo fmt --all -- --check

step "clippy x86_64"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "clippy aarch64"
cargo clippy --workspace --all-targets --locked --target aarch64-unknown-linux-gnu -- -D warnings

step "unit and direct KVM tests (x86_64)"
cargo test --workspace --locked
step "unit tests (aarch64, under qemu-user)"
cargo test --workspace --locked --target aarch64-unknown-linux-gnu --lib --bins

step "static release binaries"
bash ci/build-static.sh all

step "API: a Firecracker client from PyPI drives tandem"
bash ci/api-client-flow.sh --vmm tandem
step "API: schemathesis against tandem's and Firecracker's descriptions"
bash ci/api-schemathesis.sh --vmm tandem --max-examples 50

step "fuzz smoke: every cargo-fuzz target for 10 s from its committed seeds"
bash ci/fuzz.sh --seconds 10 --seed 1

if [ "${1:-}" = --quick ]; then
    exit 0
fi

step "end-to-end, and kvm-unit-tests on the three host flavours and this machine's KVM"
bash ci/e2e.sh ci
