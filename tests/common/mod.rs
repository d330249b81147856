//! What the integration tests share: opening KVM, or saying why a test
//! cannot run here — a failure in CI, a skip with a message elsewhere.

pub mod api_vmm;
pub mod counter;
pub mod netns;

use kvm_ioctls::Kvm;

/// Opens KVM, or explains why the test cannot run here.
pub fn kvm_or_skip() -> Option<Kvm> {
    let usable = Kvm::new().ok().filter(|kvm| kvm.get_api_version() == 12);
    if usable.is_none() {
        let why = "no usable /dev/kvm (missing, no permission, or emulated without KVM)";
        if std::env::var_os("CI").is_some() {
            panic!("{why}: these tests must run in CI");
        }
        eprintln!("SKIPPED: {why}");
    }
    usable
}
