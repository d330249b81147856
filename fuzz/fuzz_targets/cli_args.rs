//! Feeds tandem's command line (src/config.rs): clap's parser for `tandem
//! run …`, `tandem api …` and Firecracker's flags, over an argument vector
//! (the input split at NUL bytes; seeds: real command lines with `--disk`,
//! `--net`, `--memory` …), then `RunArgs::resources()`; and the value
//! parsers `parse_disk`, `parse_net` and `parse_size` on each argument.
//!
//! Checks: errors, not panics; a size that parses is the number times its
//! unit; a `--disk`/`--net` that parses names a path / a 1–15 byte TAP.
//!
//! The clap command is built once and reused (what `Cli::try_parse_from`
//! does, without rebuilding tandem's whole command tree every execution,
//! which took most of an execution's time).
#![no_main]

use std::cell::RefCell;

use clap::{CommandFactory, FromArgMatches};
use libfuzzer_sys::fuzz_target;
use tandem::config::{parse_disk, parse_net, parse_size, Cli, Command};

thread_local! {
    static PARSER: RefCell<clap::Command> = RefCell::new(Cli::command());
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let args: Vec<&str> = text.split('\0').take(64).collect();
    let argv = std::iter::once("tandem").chain(args.iter().copied());
    let parsed = PARSER.with_borrow_mut(|parser| {
        let mut matches = parser.try_get_matches_from_mut(argv).ok()?;
        Cli::from_arg_matches_mut(&mut matches).ok()
    });
    if let Some(cli) = parsed {
        if let Some(Command::Run(run)) = &cli.command {
            let resources = run.resources();
            let _ = format!("{resources:?}");
        }
        let _ = cli.vmm.ignored.given();
    }
    // Every argument is also tried as a --disk, --net and size value.
    for arg in args.iter().take(8) {
        check_values(arg);
    }
});

fn check_values(text: &str) {
    if let Ok(disk) = parse_disk(text) {
        assert!(!disk.path.as_os_str().is_empty());
    }
    if let Ok(net) = parse_net(text) {
        assert!((1..=15).contains(&net.tap.len()), "tap name {:?}", net.tap);
    }
    if let Ok(bytes) = parse_size(text) {
        let digits: String = text
            .trim()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let number: u64 = digits
            .parse()
            .expect("a size that parsed starts with digits");
        assert!(number == 0 || bytes >= number, "{text:?} gave {bytes}");
        assert!(bytes % 1024 == 0, "{text:?} gave {bytes}: not whole KiB");
    }
}
