//! What a firmware file holds, checked on the local bytes before anything is uploaded: an
//! Intel HEX file is read record by record (with the `ihex` crate) into the address range it
//! writes, an ELF file (`.elf`, `.axf`, `.out`) must be a 32-bit ARM ELF and its loadable
//! segments give the range, and a `.bin` covers its size from its write address. Pure: bytes
//! in, an [`Image`] or the reason out; naming the file and the device is the caller's job.
//! An [`Upload`] is one checked file as it goes to the server.

use std::fmt;
use std::path::PathBuf;

use ihex::{ReaderError, Record};

/// Where a `.bin` is written when no `@address` is given.
pub const DEFAULT_BIN_ADDRESS: u32 = 0x0800_0000;

/// One checked file to upload (several jobs may share it).
#[derive(Debug, Clone)]
pub struct Upload {
    pub local: PathBuf,
    pub remote_name: String,
    /// sha256 of the content, lower-case hex.
    pub sha256: String,
    /// The content as checked by the plan: exactly these bytes are uploaded.
    pub data: std::sync::Arc<[u8]>,
}

/// The addresses a file writes: `first..=last`, `bytes` of data in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub first: u32,
    pub last: u32,
    pub bytes: u64,
}

impl fmt::Display for Extent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "0x{:08X}–0x{:08X}, {}",
            self.first,
            self.last,
            human_size(self.bytes)
        )
    }
}

/// What one firmware file will write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image {
    /// The address range, for the formats this module reads (hex, ELF, bin).
    pub extent: Option<Extent>,
    /// Size of the file itself.
    pub file_bytes: u64,
}

impl fmt::Display for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.extent {
            Some(e) => e.fmt(f),
            None => write!(
                f,
                "{} file; the programmer reads its addresses",
                human_size(self.file_bytes)
            ),
        }
    }
}

/// `512 bytes`, `16 KiB`, `60.5 KiB`, `1.2 MiB`, `20.3 GiB`.
pub fn human_size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = KIB * KIB;
    const GIB: u64 = MIB * KIB;
    match bytes {
        b if b < KIB => format!("{b} bytes"),
        b if b < MIB && b % KIB == 0 => format!("{} KiB", b / KIB),
        b if b < MIB => format!("{:.1} KiB", b as f64 / KIB as f64),
        b if b < GIB && b % MIB == 0 => format!("{} MiB", b / MIB),
        b if b < GIB => format!("{:.1} MiB", b as f64 / MIB as f64),
        b => format!("{:.1} GiB", b as f64 / GIB as f64),
    }
}

/// Checks `bytes` as a file of format `ext` (lower case, without the dot); `address` is the
/// write address of a `.bin`. Formats this module does not read are accepted as they are.
pub fn inspect(ext: &str, bytes: &[u8], address: Option<u32>) -> Result<Image, String> {
    let file_bytes = bytes.len() as u64;
    let extent = match ext {
        "hex" | "ihex" => Some(hex_extent(bytes)?),
        "elf" | "axf" | "out" => elf_extent(bytes)?,
        "bin" => Some(bin_extent(
            address.unwrap_or(DEFAULT_BIN_ADDRESS),
            file_bytes,
        )?),
        _ => None,
    };
    Ok(Image { extent, file_bytes })
}

/// A `.bin` written at `address`.
fn bin_extent(address: u32, len: u64) -> Result<Extent, String> {
    let last = u64::from(address) + len - 1;
    match u32::try_from(last) {
        Ok(last) => Ok(Extent {
            first: address,
            last,
            bytes: len,
        }),
        Err(_) => Err(format!(
            "written at 0x{address:08X}, its {} would run past the end of the 32-bit address space",
            human_size(len)
        )),
    }
}

/// Why an Intel HEX line is not a record, in words.
fn record_problem(e: ReaderError) -> String {
    match e {
        ReaderError::MissingStartCode => "does not start with `:`".into(),
        ReaderError::RecordTooShort => "is too short for a record".into(),
        ReaderError::RecordTooLong => "is too long for a record (more than 255 data bytes)".into(),
        ReaderError::RecordNotEvenLength => "has an odd number of hex digits".into(),
        ReaderError::ContainsInvalidCharacters => "has characters that are not hex digits".into(),
        // The crate gives (what the bytes sum to, what the line says).
        ReaderError::ChecksumMismatch(computed, found) => {
            format!("has a bad checksum: it ends in {found:02X}, its bytes need {computed:02X}")
        }
        ReaderError::PayloadLengthMismatch => "is not as long as its byte count says".into(),
        ReaderError::UnsupportedRecordType(t) => format!("has the unknown record type {t:02X}"),
        ReaderError::InvalidLengthForType => "has the wrong length for its record type".into(),
    }
}

/// `range` grown to include `first..=last`.
fn widen(range: Option<(u64, u64)>, first: u64, last: u64) -> (u64, u64) {
    match range {
        Some((lo, hi)) => (lo.min(first), hi.max(last)),
        None => (first, last),
    }
}

/// The line as it can be shown in a message: printable ASCII, at most 44 characters.
fn shown(line: &str) -> String {
    let clean: String = line
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    if clean.len() > 44 {
        format!("{}...", &clean[..41])
    } else {
        clean
    }
}

/// The range of an Intel HEX file. Strict where a lenient reader would flash the wrong thing:
/// a bad line, a missing end-of-file record (a truncated copy) and records after it (two files
/// joined with `cat`: the programmer stops at the first end record) are all refused.
pub fn hex_extent(bytes: &[u8]) -> Result<Extent, String> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| "is not Intel HEX: it is not text".to_string())?;
    let mut base = 0u64;
    let mut range: Option<(u64, u64)> = None;
    let mut total = 0u64;
    let mut end_line = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(end) = end_line {
            return Err(format!(
                "is not valid Intel HEX: line {n} (`{}`) comes after the end-of-file record of \
                 line {end}; were two files joined?",
                shown(line)
            ));
        }
        let record = Record::from_record_string(line).map_err(|e| {
            format!(
                "is not valid Intel HEX: line {n} (`{}`) {}",
                shown(line),
                record_problem(e)
            )
        })?;
        match record {
            Record::Data { offset, value } if !value.is_empty() => {
                let first = base + u64::from(offset);
                let last = first + value.len() as u64 - 1;
                total += value.len() as u64;
                range = Some(widen(range, first, last));
            }
            Record::ExtendedSegmentAddress(segment) => base = u64::from(segment) << 4,
            Record::ExtendedLinearAddress(upper) => base = u64::from(upper) << 16,
            Record::EndOfFile => end_line = Some(n),
            _ => {}
        }
    }
    if end_line.is_none() {
        return Err(
            "is not valid Intel HEX: it has no end-of-file record (`:00000001FF`); the file may \
             be truncated"
                .into(),
        );
    }
    let Some((first, last)) = range else {
        return Err("holds no data: it has no data records".into());
    };
    let last = u32::try_from(last)
        .map_err(|_| "is not valid Intel HEX: its data runs past the 32-bit address space")?;
    Ok(Extent {
        first: first as u32,
        last,
        bytes: total,
    })
}

const ELF_MAGIC: &[u8] = b"\x7fELF";
const EM_ARM: u16 = 40;
const PT_LOAD: u64 = 1;

/// Checks that the file is a 32-bit ARM ELF and returns the range its loadable segments write
/// (by their load addresses), if it has any with data.
pub fn elf_extent(bytes: &[u8]) -> Result<Option<Extent>, String> {
    if !bytes.starts_with(ELF_MAGIC) {
        return Err("is not an ELF file (it does not start with the ELF magic `\\x7fELF`)".into());
    }
    let truncated = || "is a truncated ELF file (its headers are cut short)".to_string();
    let little = match bytes.get(5) {
        Some(1) => true,
        Some(2) => false,
        _ => return Err(truncated()),
    };
    // An unsigned field of `len` bytes at `at`, in the file's byte order.
    let field = |at: usize, len: usize| -> Result<u64, String> {
        let b = bytes.get(at..at + len).ok_or_else(truncated)?;
        let digits = |acc: u64, byte: &u8| acc << 8 | u64::from(*byte);
        Ok(if little {
            b.iter().rev().fold(0, digits)
        } else {
            b.iter().fold(0, digits)
        })
    };
    if bytes.get(4) != Some(&1) {
        return Err(
            "is a 64-bit ELF file; STM32 firmware is a 32-bit ARM ELF (was it built for the \
             host by mistake?)"
                .into(),
        );
    }
    let machine = field(18, 2)?;
    if machine != u64::from(EM_ARM) {
        return Err(format!(
            "is an ELF file for machine type {machine}, not ARM ({EM_ARM}); was it built for \
             the host by mistake?"
        ));
    }
    // Header fields of 32-bit ELF: program headers' offset, entry size and count.
    let (phoff, phentsize, phnum) = (field(28, 4)?, field(42, 2)?, field(44, 2)?);
    let mut range: Option<(u64, u64)> = None;
    let mut total = 0u64;
    for i in 0..phnum {
        let at = (phoff + i * phentsize) as usize;
        // p_type, p_paddr (the load address), p_filesz.
        let (kind, paddr, filesz) = (field(at, 4)?, field(at + 12, 4)?, field(at + 16, 4)?);
        if kind != PT_LOAD || filesz == 0 {
            continue;
        }
        total += filesz;
        range = Some(widen(range, paddr, paddr + filesz - 1));
    }
    Ok(range.and_then(|(first, last)| {
        Some(Extent {
            first: u32::try_from(first).ok()?,
            last: u32::try_from(last).ok()?,
            bytes: total,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid Intel HEX file (written by the `ihex` crate): `data` from `address` (within one
    /// 64 KiB segment).
    fn hex(address: u32, data: &[u8]) -> String {
        let data = data.chunks(16).zip((address as u16..).step_by(16));
        let records: Vec<Record> =
            std::iter::once(Record::ExtendedLinearAddress((address >> 16) as u16))
                .chain(data.map(|(c, offset)| Record::Data {
                    offset,
                    value: c.to_vec(),
                }))
                .chain([Record::EndOfFile])
                .collect();
        ihex::create_object_file_representation(&records).unwrap()
    }

    #[test]
    fn a_hex_file_gives_its_range_and_size() {
        let e = hex_extent(hex(0x0800_0000, &[0xA5; 16 * 1024]).as_bytes()).unwrap();
        assert_eq!(
            (e.first, e.last, e.bytes),
            (0x0800_0000, 0x0800_3FFF, 16 * 1024)
        );
        assert_eq!(e.to_string(), "0x08000000–0x08003FFF, 16 KiB");
        // CRLF, blank lines and an extended segment address are fine.
        let text = ":020000021000EC\r\n\r\n:0400100001020304E2\r\n:00000001FF\r\n";
        let e = hex_extent(text.as_bytes()).unwrap();
        assert_eq!((e.first, e.last, e.bytes), (0x10010, 0x10013, 4));
    }

    #[test]
    fn a_malformed_hex_file_names_the_line_and_the_problem() {
        let good = hex(0x0800_0000, b"0123456789abcdef0123");
        let lines: Vec<&str> = good.lines().collect();
        let with_line = |n: usize, replacement: &str| {
            let mut l = lines.clone();
            l[n - 1] = replacement;
            l.join("\n")
        };
        // Last digit of the checksum changed.
        let mut bad = lines[1].to_string();
        let last = bad.pop().unwrap();
        bad.push(if last == '0' { '1' } else { '0' });
        for (text, needle) in [
            (with_line(2, &bad), "line 2 (`:10000000"),
            (with_line(2, &bad), "has a bad checksum: it ends in"),
            (
                with_line(3, "10000000"),
                "line 3 (`10000000`) does not start with `:`",
            ),
            (with_line(3, ":0400ZZ00"), "not hex digits"),
            (with_line(3, ":04000000"), "is too short"),
            (with_line(3, ":0400000001020"), "odd number"),
            (
                with_line(3, ":0500000001020304F1"),
                "not as long as its byte count",
            ),
            (with_line(3, ":00000007F9"), "unknown record type 07"),
            (lines[..3].join("\n"), "no end-of-file record"),
            (format!("{good}{good}"), "line 5 (`:02000004"),
            (
                format!("{good}{good}"),
                "comes after the end-of-file record of line 4",
            ),
            (":00000001FF\n".to_string(), "no data records"),
        ] {
            let e = hex_extent(text.as_bytes()).unwrap_err();
            assert!(e.contains(needle), "{needle:?} not in {e:?}");
        }
        assert!(hex_extent(b"\xff\xfe").unwrap_err().contains("not text"));
        let long = format!(":{}", "0".repeat(600));
        let e = hex_extent(long.as_bytes()).unwrap_err();
        assert!(e.contains(&format!("(`:{}...`)", "0".repeat(40))), "{e}");
    }

    /// A minimal 32-bit little-endian ELF with one PT_LOAD segment.
    fn elf(class: u8, machine: u16, paddr: u32, filesz: u32) -> Vec<u8> {
        let mut b = vec![0u8; 52 + 32];
        b[..4].copy_from_slice(ELF_MAGIC);
        b[4] = class;
        b[5] = 1;
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[28..32].copy_from_slice(&52u32.to_le_bytes());
        b[42..44].copy_from_slice(&32u16.to_le_bytes());
        b[44..46].copy_from_slice(&1u16.to_le_bytes());
        b[52..56].copy_from_slice(&(PT_LOAD as u32).to_le_bytes());
        b[64..68].copy_from_slice(&paddr.to_le_bytes());
        b[68..72].copy_from_slice(&filesz.to_le_bytes());
        b
    }

    #[test]
    fn elf_files_are_checked_and_give_their_load_range() {
        let e = elf_extent(&elf(1, EM_ARM, 0x0800_0000, 0x800))
            .unwrap()
            .unwrap();
        assert_eq!(e.to_string(), "0x08000000–0x080007FF, 2 KiB");
        assert_eq!(elf_extent(&elf(1, EM_ARM, 0x0800_0000, 0)).unwrap(), None);
        for (bytes, needle) in [
            (b":00000001FF\n".to_vec(), "not an ELF file"),
            (elf(2, EM_ARM, 0, 1), "64-bit"),
            (elf(1, 62, 0, 1), "machine type 62, not ARM"),
            (elf(1, EM_ARM, 0, 1)[..40].to_vec(), "truncated"),
            (b"\x7fELF".to_vec(), "truncated"),
        ] {
            let e = elf_extent(&bytes).unwrap_err();
            assert!(e.contains(needle), "{needle:?} not in {e:?}");
        }
    }

    #[test]
    fn bins_and_other_formats() {
        let i = inspect("bin", &[0; 2048], Some(0x0800_4000)).unwrap();
        assert_eq!(i.to_string(), "0x08004000–0x080047FF, 2 KiB");
        let i = inspect("bin", &[0; 10], None).unwrap();
        assert_eq!(i.to_string(), "0x08000000–0x08000009, 10 bytes");
        assert!(
            inspect("bin", &[0; 16], Some(0xFFFF_FFF8))
                .unwrap_err()
                .contains("past the end")
        );
        let i = inspect("srec", &[b'S'; 1536], None).unwrap();
        assert_eq!(
            i.to_string(),
            "1.5 KiB file; the programmer reads its addresses"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(human_size(0), "0 bytes");
        assert_eq!(human_size(1023), "1023 bytes");
        assert_eq!(human_size(16384), "16 KiB");
        assert_eq!(human_size(61440 + 512), "60.5 KiB");
        assert_eq!(human_size(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(human_size(4 << 20), "4 MiB");
        assert_eq!(human_size(5 << 30), "5.0 GiB");
    }
}
