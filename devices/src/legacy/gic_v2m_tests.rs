//! The GICv2m frame as Linux's gic-v2m driver and a device's MSI see it:
//! MSI_TYPER and MSI_IIDR, a SETSPI write raising exactly its SPI's
//! trigger, INTIDs outside the frame ignored (and logged, rate-limited),
//! and messages routed to SPIs without the bus.

use super::*;

/// tandem's aarch64 frame: at the GICv3 ITS's slot, SPIs 96..160.
const WINDOW: V2mWindow = V2mWindow {
    base: 0x0802_0000,
    first_spi: 96,
    spis: 64,
};

fn frame() -> GicV2mFrame {
    GicV2mFrame::new(WINDOW).unwrap()
}

fn read32(frame: &mut GicV2mFrame, offset: u64) -> u32 {
    let mut data = [0xff; 4];
    frame.read(offset, &mut data);
    u32::from_le_bytes(data)
}

fn setspi(frame: &mut GicV2mFrame, intid: u32) {
    frame.write(MSI_SETSPI_NS, &intid.to_le_bytes());
}

/// The SPIs whose trigger fired since the last call (each read once).
fn raised(frame: &GicV2mFrame) -> Vec<u32> {
    frame
        .spi_triggers()
        .filter(|(_, trigger)| trigger.event_fd().read().is_ok())
        .map(|(spi, _)| spi)
        .collect()
}

#[test]
fn typer_names_the_first_intid_and_the_count_and_iidr_the_implementer() {
    let mut frame = frame();
    assert_eq!(read32(&mut frame, 0x008), 0x0080_0040, "INTID 128, 64 SPIs");
    assert_eq!(read32(&mut frame, 0xfcc), V2M_IIDR);
    assert_eq!(V2M_IIDR & 0xfff, 0x43b, "Arm's JEP106 code");
    for offset in [0x000, 0x004, 0x040, 0x044, 0x048, 0xfc8, 0xfd0, 0xffc] {
        assert_eq!(read32(&mut frame, offset), 0, "{offset:#x} reads zero");
    }
    let mut narrow = [0xff; 2];
    frame.read(0x008, &mut narrow);
    assert_eq!(narrow, [0, 0], "only 32-bit accesses reach a register");
    frame.read(0x00a, &mut narrow);
    assert_eq!(narrow, [0, 0]);
}

#[test]
fn a_setspi_write_raises_exactly_its_spis_trigger() {
    let mut frame = frame();
    let triggers: Vec<u32> = frame.spi_triggers().map(|(spi, _)| spi).collect();
    assert_eq!(triggers, (96..160).collect::<Vec<_>>());
    for intid in [128, 130, 191] {
        setspi(&mut frame, intid);
        assert_eq!(raised(&frame), [intid - 32], "INTID {intid}");
    }
    setspi(&mut frame, 129);
    setspi(&mut frame, 129);
    assert_eq!(raised(&frame), [97], "two writes, one SPI");
    let trigger = &frame.spi_triggers().nth(1).unwrap().1.clone();
    setspi(&mut frame, 129);
    setspi(&mut frame, 129);
    assert_eq!(trigger.event_fd().read().unwrap(), 2, "both counted");
}

#[test]
fn intids_outside_the_frame_and_other_writes_raise_nothing() {
    let log = crate::test_log::Capture::start();
    let mut frame = frame();
    let before = BAD_SETSPI.count();
    let outside = [0, 31, 32, 127, 192, 1019, 1023, 0x1_0080, u32::MAX];
    for intid in outside {
        setspi(&mut frame, intid);
    }
    assert_eq!(raised(&frame), [] as [u32; 0]);
    assert!(BAD_SETSPI.count() >= before + outside.len() as u64);
    assert!(log
        .warnings_here()
        .iter()
        .any(|l| l.contains("MSI_SETSPI_NS write of 0x7f is not one of INTIDs 128+64")));

    // Not MSI_SETSPI_NS, or not a 32-bit write: ignored.
    frame.write(MSI_SETSPI_NS, &128u16.to_le_bytes());
    frame.write(MSI_SETSPI_NS + 1, &128u32.to_le_bytes());
    frame.write(0x008, &128u32.to_le_bytes());
    frame.write(0x044, &128u32.to_le_bytes());
    frame.write(MSI_SETSPI_NS, &[128, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(raised(&frame), [] as [u32; 0]);
    assert_eq!(
        read32(&mut frame, 0x008),
        WINDOW.typer(),
        "TYPER is read-only"
    );
}

#[test]
fn a_message_to_the_doorbell_names_its_spi() {
    let message = |address, data| MsiMessage { address, data };
    assert_eq!(WINDOW.doorbell(), 0x0802_0040);
    assert_eq!(WINDOW.spi_for(message(0x0802_0040, 128)), Some(96));
    assert_eq!(WINDOW.spi_for(message(0x0802_0040, 191)), Some(159));
    assert_eq!(WINDOW.spi_for(message(0x0802_0040, 127)), None);
    assert_eq!(WINDOW.spi_for(message(0x0802_0040, 192)), None);
    assert_eq!(
        WINDOW.spi_for(message(0x0802_0040, 96)),
        None,
        "an SPI number, not an INTID"
    );
    assert_eq!(
        WINDOW.spi_for(message(0x0802_0000, 128)),
        None,
        "the frame, not its doorbell"
    );
    assert_eq!(
        WINDOW.spi_for(message(0xfee0_0000, 128)),
        None,
        "an x86 address"
    );
    assert_eq!(WINDOW.spi_for(message(0x1_0802_0040, 128)), None);
}

#[test]
fn delivering_a_message_raises_what_the_doorbell_write_would() {
    let frame = frame();
    let mut on_bus = frame.clone();
    assert!(frame.deliver(MsiMessage {
        address: 0x0802_0040,
        data: 140,
    }));
    assert_eq!(raised(&on_bus), [108], "clones share the triggers");
    setspi(&mut on_bus, 140);
    assert_eq!(raised(&frame), [108]);
    assert!(!frame.deliver(MsiMessage {
        address: 0x0802_0040,
        data: 200,
    }));
    assert!(!frame.deliver(MsiMessage {
        address: 0x0802_0044,
        data: 140,
    }));
    assert_eq!(raised(&frame), [] as [u32; 0]);
}

#[test]
fn windows_no_gic_can_have_are_refused() {
    let empty = V2mWindow { spis: 0, ..WINDOW };
    assert!(GicV2mFrame::new(empty).is_err());
    // SPI 987 is INTID 1019, the last; one more is past it.
    let last = V2mWindow {
        first_spi: 924,
        spis: 64,
        ..WINDOW
    };
    assert!(GicV2mFrame::new(last).is_ok());
    let past = V2mWindow { spis: 65, ..last };
    let err = GicV2mFrame::new(past).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("924+65"), "{err}");
    let wrapping = V2mWindow {
        first_spi: u32::MAX,
        ..WINDOW
    };
    assert!(GicV2mFrame::new(wrapping).is_err());
    assert_eq!(frame().window(), WINDOW);
}
