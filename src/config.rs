//! The command line: `tandem run …` parsed into the arch-neutral
//! [`arch::VmConfig`] plus the core's own options. Every check that can be
//! made before touching KVM is made here, each with a one-line message.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use arch::{GicChoice, VmConfig};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Command line used when `--cmdline` is not given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 panic=-1";

/// tandem: a virtual machine monitor for Linux guests on KVM.
#[derive(Debug, Parser)]
#[command(name = "tandem", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// tandem's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a Linux guest and attach its console to this terminal.
    Run(RunArgs),
}

/// Options of `tandem run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kernel image: bzImage or ELF vmlinux (x86_64), Image (aarch64).
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,
    /// Initial ramdisk.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u8,
    /// Guest RAM: a number with an optional K, M, G or T suffix (MiB when
    /// there is none).
    #[arg(long, value_name = "SIZE", default_value = "512M", value_parser = parse_size)]
    pub memory: u64,
    /// Interrupt controller on aarch64: GICv3 if the host has it, else GICv2.
    #[arg(long, value_enum, default_value_t = GicArg::Auto)]
    pub gic: GicArg,
    /// Write the guest's device tree to FILE (aarch64).
    #[arg(long, value_name = "FILE")]
    pub dump_fdt: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_level)]
    pub log_level: log::LevelFilter,
}

/// `--gic` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GicArg {
    /// GICv3 when available, else GICv2.
    Auto,
    /// GICv2 (GIC-400 hosts such as the Raspberry Pi).
    V2,
    /// GICv3.
    V3,
}

impl From<GicArg> for GicChoice {
    fn from(arg: GicArg) -> Self {
        match arg {
            GicArg::Auto => GicChoice::Auto,
            GicArg::V2 => GicChoice::V2,
            GicArg::V3 => GicChoice::V3,
        }
    }
}

/// Parses a log level name.
fn parse_level(text: &str) -> Result<log::LevelFilter, String> {
    text.parse()
        .map_err(|_| format!("'{text}' is not a log level (error, warn, info, debug, trace)"))
}

/// Parses `512M`, `3G`, `3GiB`, `1024` (MiB) … into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (try 512M or 2G)"))?;
    let shift = match suffix.trim_end_matches("iB").trim_end_matches('B') {
        "" | "M" | "m" => 20,
        "K" | "k" => 10,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => {
            return Err(format!(
                "'{text}' has an unknown size suffix (use K, M, G or T)"
            ))
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// Fails with a one-line message unless `path` names a readable file.
fn check_readable_file(what: &str, path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("{what} {}", path.display()))?;
    if !meta.is_file() {
        bail!("{what} {} is not a regular file", path.display());
    }
    std::fs::File::open(path).with_context(|| format!("{what} {}", path.display()))?;
    Ok(())
}

impl RunArgs {
    /// Checks the files and numbers and builds the back end's config.
    pub fn vm_config(&self) -> Result<VmConfig> {
        check_readable_file("kernel", &self.kernel)?;
        if let Some(initrd) = &self.initrd {
            check_readable_file("initrd", initrd)?;
        }
        if self.cpus == 0 {
            bail!("--cpus must be at least 1");
        }
        Ok(VmConfig {
            vcpus: self.cpus,
            memory_size: self.memory,
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            cmdline: self.cmdline.clone(),
            gic: self.gic.into(),
            dump_fdt: self.dump_fdt.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_suffixes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("512"), Ok(512 << 20));
        assert_eq!(parse_size("3G"), Ok(3 << 30));
        assert_eq!(parse_size("3GiB"), Ok(3 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("5X").unwrap_err().contains("suffix"));
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .contains("too large"));
    }

    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["tandem", "run"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Run(run) => run,
        })
    }

    #[test]
    fn missing_kernel_is_one_clear_error() {
        let args = run_args(&["--kernel", "/nonexistent/vmlinuz"]).unwrap();
        let err = format!("{:#}", args.vm_config().unwrap_err());
        assert!(err.starts_with("kernel /nonexistent/vmlinuz"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn defaults_and_flags_reach_the_vm_config() {
        let kernel = std::env::current_exe().unwrap();
        let kernel = kernel.to_str().unwrap();
        let cfg = run_args(&["--kernel", kernel])
            .unwrap()
            .vm_config()
            .unwrap();
        assert_eq!((cfg.vcpus, cfg.memory_size), (1, 512 << 20));
        assert_eq!(cfg.cmdline, DEFAULT_CMDLINE);
        assert_eq!(cfg.gic, GicChoice::Auto);
        let cfg = run_args(&[
            "--kernel", kernel, "--cpus", "2", "--memory", "3G", "--gic", "v2",
        ])
        .unwrap()
        .vm_config()
        .unwrap();
        assert_eq!(
            (cfg.vcpus, cfg.memory_size, cfg.gic),
            (2, 3 << 30, GicChoice::V2)
        );
        assert!(run_args(&["--kernel", kernel, "--cpus", "0"])
            .unwrap()
            .vm_config()
            .is_err());
        assert!(run_args(&["--kernel", kernel, "--bogus"]).is_err());
        assert!(run_args(&["--kernel", kernel, "--cpus", "300"]).is_err());
    }
}
