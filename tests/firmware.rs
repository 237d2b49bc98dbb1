//! Firmware content checks before anything connects: a malformed .hex names its line, a
//! `.elf` must be an ELF file; a good file's address range is logged at -v 1.

use crate::util::{TestEnv, dfu, intel_hex, refused};

const DFU1: &str = "207036B25853";

fn env() -> TestEnv {
    TestEnv::new(vec![dfu(DFU1, "USB1")], 1)
}

#[test]
fn a_malformed_hex_file_is_refused_naming_the_line() {
    let env = env();
    let good = intel_hex(0x0800_0000, &[0x11; 40]);
    // The last digit of the third line's checksum changed.
    let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
    let last = lines[2].pop().unwrap();
    lines[2].push(if last == 'F' { 'E' } else { 'F' });
    std::fs::write(env.local.join("bad.hex"), lines.join("\n")).unwrap();
    refused(
        &env,
        &["flash-auto", "lab", "b0=bad.hex"],
        &[
            "error: firmware for `b0`: `bad.hex` is not valid Intel HEX: line 3 (`:10001000",
            "has a bad checksum",
            "hint: check that `bad.hex` is the build output you meant",
        ],
    );
    std::fs::write(env.local.join("cut.hex"), &good[..good.len() - 12]).unwrap();
    refused(
        &env,
        &["flash-auto", "lab", "b0=cut.hex"],
        &["`cut.hex` is not valid Intel HEX: it has no end-of-file record"],
    );
    std::fs::write(env.local.join("text.hex"), "hello\n").unwrap();
    refused(
        &env,
        &["flash-auto", "lab", "b0=text.hex", "--dry-run"],
        &["line 1 (`hello`) does not start with `:`"],
    );
}

#[test]
fn a_file_named_elf_that_is_not_elf_is_refused() {
    let env = env();
    std::fs::write(env.local.join("app.elf"), intel_hex(0x0800_0000, b"x")).unwrap();
    refused(
        &env,
        &["flash-auto", "lab", "b0=app.elf"],
        &["`app.elf` is not an ELF file (it does not start with the ELF magic"],
    );
}

/// A minimal 32-bit little-endian ARM ELF with one loadable segment of `data` at `paddr`.
fn arm_elf(paddr: u32, data: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 52 + 32];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 1;
    b[5] = 1;
    b[6] = 1;
    b[16..18].copy_from_slice(&2u16.to_le_bytes());
    b[18..20].copy_from_slice(&40u16.to_le_bytes());
    b[28..32].copy_from_slice(&52u32.to_le_bytes());
    b[42..44].copy_from_slice(&32u16.to_le_bytes());
    b[44..46].copy_from_slice(&1u16.to_le_bytes());
    let offset = b.len() as u32;
    b[52..56].copy_from_slice(&1u32.to_le_bytes());
    b[56..60].copy_from_slice(&offset.to_le_bytes());
    b[60..64].copy_from_slice(&paddr.to_le_bytes());
    b[64..68].copy_from_slice(&paddr.to_le_bytes());
    b[68..72].copy_from_slice(&(data.len() as u32).to_le_bytes());
    b[72..76].copy_from_slice(&(data.len() as u32).to_le_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn good_files_are_flashed_and_their_range_is_logged() {
    let env = env();
    std::fs::write(
        env.local.join("app.hex"),
        intel_hex(0x0800_4000, &[0x22; 1024]),
    )
    .unwrap();
    env.run(&["flash-auto", "lab", "b0=app.hex"])
        .code(0)
        .stderr_has("[INFO][b0] app.hex: 0x08004000–0x080043FF, 1 KiB");
    std::fs::write(
        env.local.join("app.elf"),
        arm_elf(0x0800_0000, &[0x33; 2048]),
    )
    .unwrap();
    env.run(&["flash-auto", "lab", "b0=app.elf"])
        .code(0)
        .stderr_has("[INFO][b0] app.elf: 0x08000000–0x080007FF, 2 KiB");
    assert_eq!(env.flashed(DFU1), Some(env.sha256("app.elf")));
    std::fs::write(env.local.join("app.bin"), [0x44; 100]).unwrap();
    env.run(&["flash-auto", "lab", "b0=app.bin@0x08010000"])
        .code(0)
        .stderr_has("[INFO][b0] app.bin: 0x08010000–0x08010063, 100 bytes");
    env.run(&["-q", "flash-auto", "lab", "b0=app.hex"])
        .code(0)
        .stderr_lacks("0x08004000");
}
