//! virtio-blk tests of the backing file itself: host block devices (on a
//! loop device the test attaches), image locking (in this process and
//! from another one), a lock handed over for a migration, and sticky
//! flush failures.

use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::*;

/// A loop device over a file, detached on drop.
struct LoopDevice(PathBuf);

impl LoopDevice {
    /// Attaches `file` with `sector_size`-byte logical blocks, or says
    /// why not (not root, no loop driver, no losetup).
    fn attach(file: &Path, sector_size: u32) -> Option<Self> {
        let output = Command::new("losetup")
            .args(["-f", "--show", "--sector-size", &sector_size.to_string()])
            .arg(file)
            .output();
        match output {
            Ok(out) if out.status.success() => {
                let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
                Some(Self(path.into()))
            }
            Ok(out) => {
                let why = String::from_utf8_lossy(&out.stderr);
                eprintln!("SKIPPED: no loop device (losetup: {})", why.trim());
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: no loop device (losetup: {e})");
                None
            }
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A fixture whose device serves `path` (not `file`, which is kept for
/// checking the data).
fn fixture_on(file: TempFile, path: &Path, readonly: bool) -> Result<Fixture, BlockError> {
    let block = Block::new(&BlockConfig {
        path: path.to_path_buf(),
        readonly,
        id: None,
        io_engine: IoEngine::Sync,
    })?;
    let mem = test_memory();
    let ring = TestRing::new(&mem, 0, 16);
    let handler = handler_for(&block, &mem, &ring);
    Ok(Fixture {
        file,
        block,
        mem,
        ring,
        handler,
    })
}

/// The device's block size as config space reports it.
fn blk_size(block: &Block) -> u32 {
    let mut bytes = [0u8; 4];
    block.read_config(20, &mut bytes);
    u32::from_le_bytes(bytes)
}

/// Runs the device on a loop device with `sector_size`-byte blocks over
/// a 1 MiB patterned file, unless the host has no loop devices (or, under
/// qemu-user, cannot size one).
fn loop_fixture(sector_size: u32) -> Option<(Fixture, LoopDevice)> {
    let file = patterned_file(2048, 0);
    let device = LoopDevice::attach(file.as_path(), sector_size)?;
    match fixture_on(file, &device.0, false) {
        Ok(f) => Some((f, device)),
        Err(e @ BlockError::Open { .. }) if e.to_string().contains("ioctl") => {
            eprintln!("SKIPPED: block device ioctls unavailable here ({e})");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_loop_device_is_a_disk_of_its_size() {
    let Some((mut f, _device)) = loop_fixture(512) else {
        return;
    };
    assert_eq!(f.block.capacity(), 2048);
    assert_eq!(f.block.features() & feature(VIRTIO_BLK_F_BLK_SIZE), 0);
    assert_eq!(f.request(VIRTIO_BLK_T_IN, 5, (512, true)), (513, OK));
    assert_eq!(f.data(512), vec![5; 512]);
    f.mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(f.request(VIRTIO_BLK_T_OUT, 2047, (512, false)), (1, OK));
    assert_eq!(f.request(VIRTIO_BLK_T_FLUSH, 0, (0, true)).1, OK);
    assert_eq!(&file_contents(&f.file)[2047 * 512..], &[0x5a; 512]);
    assert_eq!(f.request(VIRTIO_BLK_T_IN, 2048, (512, true)), (1, IOERR));
}

#[test]
fn a_4k_loop_device_advertises_its_block_size() {
    let Some((mut f, _device)) = loop_fixture(4096) else {
        return;
    };
    assert_eq!(f.block.capacity(), 2048, "capacity stays in 512-byte units");
    assert_ne!(f.block.features() & feature(VIRTIO_BLK_F_BLK_SIZE), 0);
    assert_eq!(blk_size(&f.block), 4096);
    // 4 KiB blocks are only a hint: a lone 512-byte write still lands.
    f.mem.write_slice(&[0xa5; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(f.request(VIRTIO_BLK_T_OUT, 9, (512, false)), (1, OK));
    assert_eq!(f.request(VIRTIO_BLK_T_FLUSH, 0, (0, true)).1, OK);
    let contents = file_contents(&f.file);
    assert_eq!(&contents[9 * 512..10 * 512], &[0xa5; 512]);
    assert_eq!(&contents[8 * 512..9 * 512], &[8; 512], "neighbour kept");
    assert_eq!(f.request(VIRTIO_BLK_T_IN, 8, (4096, true)), (4097, OK));
    assert_eq!(f.data(1024)[512..], [0xa5; 512]);
}

#[test]
fn a_regular_file_keeps_512_byte_blocks() {
    let f = fixture(false);
    assert_eq!(f.block.features() & feature(VIRTIO_BLK_F_BLK_SIZE), 0);
    assert_eq!(blk_size(&f.block), 512);
}

fn config(file: &TempFile, readonly: bool) -> BlockConfig {
    BlockConfig {
        path: file.as_path().to_path_buf(),
        readonly,
        id: None,
        io_engine: IoEngine::Sync,
    }
}

fn assert_locked<T>(result: Result<T, impl std::fmt::Display>, file: &TempFile) {
    let Err(e) = result else {
        panic!("{} opened twice", file.as_path().display());
    };
    let expected = format!(
        "disk {} is in use by another VM (locked)",
        file.as_path().display()
    );
    assert_eq!(e.to_string(), expected);
}

/// Opens a disk whose lock was just released. A process forked meanwhile
/// (another test starting losetup) shares the open file, and so its
/// lock, until it execs: that can take a moment under qemu-user.
fn open_when_free(config: &BlockConfig) -> Block {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Block::new(config) {
            Err(BlockError::Locked(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result.expect("the lock is released"),
        }
    }
}

#[test]
fn a_read_write_disk_is_locked() {
    let file = disk_file();
    let first = Block::new(&config(&file, false)).unwrap();
    assert_locked(Block::new(&config(&file, false)), &file);
    assert_locked(Block::new(&config(&file, true)), &file);
    drop(first);
    open_when_free(&config(&file, false));
}

#[test]
fn read_only_disks_share_a_file() {
    let file = disk_file();
    let _first = Block::new(&config(&file, true)).unwrap();
    let _second = Block::new(&config(&file, true)).unwrap();
    assert_locked(Block::new(&config(&file, false)), &file);
}

#[test]
fn a_swap_locks_the_new_file_and_may_reopen_its_own() {
    let (mine, theirs, third) = (disk_file(), disk_file(), disk_file());
    let mut block = Block::new(&config(&mine, false)).unwrap();
    let _other = Block::new(&config(&theirs, false)).unwrap();
    assert_locked(block.update_backend(theirs.as_path()), &theirs);
    // The same file again (a resize notification) is not a conflict.
    block.update_backend(mine.as_path()).unwrap();
    assert_locked(Block::new(&config(&mine, true)), &mine);
    block.update_backend(third.as_path()).unwrap();
    assert_locked(Block::new(&config(&third, false)), &third);
    open_when_free(&config(&mine, false));
}

#[test]
fn a_disk_handed_over_can_be_opened_by_another_and_taken_back() {
    // A migration to this host: the source lets the destination open the
    // disk, and takes it back if the migration fails.
    let file = disk_file();
    let mut source = Block::new(&config(&file, false)).unwrap();
    source.hand_over(true).unwrap();
    let destination = open_when_free(&config(&file, false));
    let taken = source.hand_over(false).unwrap_err();
    assert!(taken.to_string().contains("locked"), "{taken}");
    drop(destination);
    source.hand_over(false).unwrap();
    assert_locked(Block::new(&config(&file, false)), &file);
}

const LOCK_PATH_VAR: &str = "TANDEM_TEST_DISK_TO_LOCK";

/// The other process of `a_lock_held_by_another_process_is_detected`:
/// opens the disk, says so, and holds it until its stdin closes.
#[test]
#[ignore = "a helper process for a_lock_held_by_another_process_is_detected"]
fn hold_a_disk_open() {
    let Some(path) = std::env::var_os(LOCK_PATH_VAR) else {
        return;
    };
    let config = BlockConfig {
        path: path.into(),
        readonly: false,
        id: None,
        io_engine: IoEngine::Sync,
    };
    let _block = Block::new(&config).unwrap();
    println!("holding the disk");
    let _ = std::io::stdin().read_line(&mut String::new());
}

#[test]
fn a_lock_held_by_another_process_is_detected() {
    let file = disk_file();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "--nocapture"])
        .arg("virtio::block::tests::disk_tests::hold_a_disk_open")
        .env(LOCK_PATH_VAR, file.as_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            // qemu-user cannot run the test binary again.
            eprintln!("SKIPPED: cannot start a second test process: {e}");
            return;
        }
    };
    let mut lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    if !lines.any(|line| line.contains("holding the disk")) {
        let status = child.wait().unwrap();
        // 127: the exec failed after a fork that could not report it (a
        // vfork emulated by qemu-user).
        if status.code() == Some(127) {
            eprintln!("SKIPPED: cannot start a second test process ({status})");
            return;
        }
        panic!("the helper process did not open the disk: {status}");
    }
    assert_locked(Block::new(&config(&file, true)), &file);
    drop(child.stdin.take());
    lines.for_each(drop); // its test report
    assert!(child.wait().unwrap().success());
    open_when_free(&config(&file, false));
}

thread_local! {
    static FAILED_SYNCS: Cell<u32> = const { Cell::new(0) };
}

/// fdatasync as after a lost writeback: EIO once, then success (the
/// error was reported, the data is gone).
fn eio_once(_: &File) -> io::Result<()> {
    let failed = FAILED_SYNCS.with(|n| n.replace(n.get() + 1));
    if failed == 0 {
        Err(io::Error::from_raw_os_error(libc::EIO))
    } else {
        Ok(())
    }
}

fn flush(f: &mut Fixture) -> u8 {
    f.header(VIRTIO_BLK_T_FLUSH, 0);
    f.run(&[(HDR, 16, false), (STATUS, 1, true)]).1
}

#[test]
fn a_failed_flush_stays_failed() {
    let mut f = fixture(false);
    FAILED_SYNCS.with(|n| n.set(0));
    lock(&f.block.disk).fdatasync = eio_once;
    f.mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    assert_eq!(f.request(VIRTIO_BLK_T_OUT, 1, (512, false)), (1, OK));
    assert_eq!(flush(&mut f), IOERR);
    assert_eq!(flush(&mut f), IOERR, "the lost write is still lost");
    assert_eq!(flush(&mut f), IOERR);
    // Writes that could never be made durable are refused; reads go on.
    assert_eq!(f.request(VIRTIO_BLK_T_OUT, 2, (512, false)), (1, IOERR));
    assert_eq!(f.request(VIRTIO_BLK_T_IN, 3, (512, true)), (513, OK));
    assert_eq!(f.data(512), vec![3; 512]);
    assert_eq!(&file_contents(&f.file)[1024..1536], &[2; 512]);

    // Reopening the same file keeps the failure; a new file starts clean.
    let path = f.file.as_path().to_path_buf();
    f.block.update_backend(&path).unwrap();
    assert_eq!(flush(&mut f), IOERR);
    let new = disk_file();
    f.block.update_backend(new.as_path()).unwrap();
    assert_eq!(flush(&mut f), OK);
    assert_eq!(f.request(VIRTIO_BLK_T_OUT, 2, (512, false)), (1, OK));
}
