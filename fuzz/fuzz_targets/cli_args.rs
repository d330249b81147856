//! Feeds tandem's command line (src/config.rs): clap's parser for `tandem
//! run …`, `tandem api …` and Firecracker's flags, over argument vectors
//! built from fuzzed flags and values (`--disk`, `--net`, `--memory` and
//! the rest), then `RunArgs::resources()`; and the value parsers
//! `parse_disk`, `parse_net` and `parse_size` on raw strings.
//!
//! Checks: errors, not panics; a size that parses is the number times its
//! unit; a `--disk`/`--net` that parses names a path / a 1–15 byte TAP.
#![no_main]

use arbitrary::Arbitrary;
use clap::Parser;
use libfuzzer_sys::fuzz_target;
use tandem::config::{parse_disk, parse_net, parse_size, Cli, Command};

#[derive(Arbitrary, Debug)]
enum Arg<'a> {
    Flag(Flag),
    FlagValue(Flag, &'a str),
    Raw(&'a str),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Flag {
    Run,
    Api,
    Kernel,
    Initrd,
    Cmdline,
    Cpus,
    Memory,
    Gic,
    Disk,
    Net,
    Rng,
    Console,
    VirtioCmdline,
    Stats,
    LogLevel,
    ApiSock,
    ConfigFile,
    NoApi,
    Level,
    HttpApiMaxPayloadSize,
    Sock,
}

impl Flag {
    fn text(self) -> &'static str {
        match self {
            Flag::Run => "run",
            Flag::Api => "api",
            Flag::Kernel => "--kernel",
            Flag::Initrd => "--initrd",
            Flag::Cmdline => "--cmdline",
            Flag::Cpus => "--cpus",
            Flag::Memory => "--memory",
            Flag::Gic => "--gic",
            Flag::Disk => "--disk",
            Flag::Net => "--net",
            Flag::Rng => "--rng",
            Flag::Console => "--console",
            Flag::VirtioCmdline => "--virtio-cmdline",
            Flag::Stats => "--stats",
            Flag::LogLevel => "--log-level",
            Flag::ApiSock => "--api-sock",
            Flag::ConfigFile => "--config-file",
            Flag::NoApi => "--no-api",
            Flag::Level => "--level",
            Flag::HttpApiMaxPayloadSize => "--http-api-max-payload-size",
            Flag::Sock => "--sock",
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    args: Vec<Arg<'a>>,
    disk: &'a str,
    net: &'a str,
    size: &'a str,
}

fuzz_target!(|input: Input<'_>| {
    let mut argv = vec!["tandem".to_string()];
    for arg in input.args.iter().take(32) {
        match arg {
            Arg::Flag(flag) => argv.push(flag.text().into()),
            Arg::FlagValue(flag, value) => {
                argv.push(flag.text().into());
                argv.push((*value).into());
            }
            Arg::Raw(text) => argv.push((*text).into()),
        }
    }
    if let Ok(cli) = Cli::try_parse_from(&argv) {
        if let Some(Command::Run(run)) = &cli.command {
            let resources = run.resources();
            let _ = format!("{resources:?}");
        }
        let _ = cli.vmm.ignored.given();
    }

    if let Ok(disk) = parse_disk(input.disk) {
        assert!(!disk.path.as_os_str().is_empty());
    }
    if let Ok(net) = parse_net(input.net) {
        assert!((1..=15).contains(&net.tap.len()), "tap name {:?}", net.tap);
    }
    if let Ok(bytes) = parse_size(input.size) {
        let digits: String = input
            .size
            .trim()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let number: u64 = digits
            .parse()
            .expect("a size that parsed starts with digits");
        assert!(
            number == 0 || bytes >= number,
            "{:?} gave {bytes}",
            input.size
        );
        assert!(
            bytes % 1024 == 0,
            "{:?} gave {bytes}: not whole KiB",
            input.size
        );
    }
});
