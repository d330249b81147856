//! A hook every thread the devices crate starts calls first, with its
//! name. The VMM registers one to confine the thread (seccomp) without the
//! devices crate knowing how; with none registered, nothing happens.

use std::sync::OnceLock;

static HOOK: OnceLock<fn(&str)> = OnceLock::new();

/// Registers `hook`, called at the start of every device thread. Only the
/// first registration counts; returns false for a later one.
pub fn set_thread_start_hook(hook: fn(&str)) -> bool {
    HOOK.set(hook).is_ok()
}

/// Runs the registered hook for the calling thread, named `name`.
pub fn thread_started(name: &str) {
    if let Some(hook) = HOOK.get() {
        hook(name);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

    #[test]
    fn the_registered_hook_sees_each_thread_name() {
        assert!(set_thread_start_hook(|name| SEEN
            .lock()
            .unwrap()
            .push(name.to_string())));
        assert!(!set_thread_start_hook(|_| {}));
        std::thread::spawn(|| thread_started("virtio-test"))
            .join()
            .unwrap();
        assert!(SEEN.lock().unwrap().iter().any(|n| n == "virtio-test"));
    }
}
