//! The attacks, one family per file, run in this order every round.
//! Each returns a one-line detail for its `HOSTILE <name> done` line.
//! Every address an attack hands a device is in the program's DMA arena
//! or outside RAM altogether, so a device obeying it can only hurt the
//! program's own memory, never the guest kernel's.

mod blk;
mod chains;
mod net;
mod pio;
mod setup;
mod storms;
mod uart;

use crate::Ctx;

/// An attack: the detail line, or why it could not run.
pub type Attack = fn(&mut Ctx) -> Result<String, String>;

/// Every attack, by name, in running order.
pub const ALL: &[(&str, Attack)] = &[
    ("queue-setup-flood", setup::queue_setup_flood),
    ("rings-outside-ram", setup::rings_outside_ram),
    ("activate-reset-cycles", setup::activate_reset_cycles),
    ("chain-loop", chains::chain_loop),
    ("chain-garbage", chains::chain_garbage),
    ("buffers-outside-ram", chains::buffers_outside_ram),
    ("rings-overlap", chains::rings_overlap),
    ("blk-indirect-huge", blk::indirect_huge),
    ("blk-no-status", blk::no_status),
    ("blk-reset-during-io", blk::reset_during_io),
    ("net-rx-amplify", net::rx_amplify),
    ("net-tx-oversized", net::tx_oversized),
    ("mmio-storm-unmapped", storms::unmapped),
    ("mmio-storm-registers", storms::registers),
    ("pio-storm", pio::storm),
    ("uart-flood", uart::flood),
];

/// The device with ID `id`, or an error naming it.
fn need<'a>(ctx: &'a Ctx, id: u32, what: &str) -> Result<&'a crate::virtio::Device, String> {
    ctx.device(id).ok_or_else(|| format!("no {what} device"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_host_script_expects_every_attack() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../ci/hostile-host.sh");
        let text = std::fs::read_to_string(script).unwrap();
        let list = text.split("HOSTILE_ATTACKS=\"").nth(1).unwrap();
        let listed: Vec<&str> = list[..list.find('"').unwrap()].split_whitespace().collect();
        let ours: Vec<&str> = super::ALL.iter().map(|(name, _)| *name).collect();
        assert_eq!(listed, ours);
    }
}
