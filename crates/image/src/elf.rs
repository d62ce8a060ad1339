//! Just enough ELF64 parsing to tell whether an x86-64 executable is
//! statically linked: a dynamic one has a `PT_INTERP` program header naming
//! its loader, which the guest image does not have. (Static-pie binaries
//! have a `PT_DYNAMIC` segment but no `PT_INTERP`, and run fine.)

const PT_INTERP: u32 = 3;
const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linkage {
    Static,
    Dynamic,
}

/// Classify an x86-64 ELF64 little-endian executable. `Err` explains why
/// the bytes are not one.
pub fn linkage(bytes: &[u8]) -> Result<Linkage, String> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let e_type = u16_at(bytes, 0x10)?;
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err(format!("not an executable (ELF type {e_type})"));
    }
    let machine = u16_at(bytes, 0x12)?;
    if machine != EM_X86_64 {
        return Err(format!("not an x86-64 executable (ELF machine {machine})"));
    }
    let phoff = u64_at(bytes, 0x20)?;
    let phentsize = u16_at(bytes, 0x36)? as u64;
    let phnum = u16_at(bytes, 0x38)? as u64;
    if phnum == 0 {
        return Err("ELF file has no program headers".into());
    }
    if phentsize < 4 {
        return Err(format!("bad program header size {phentsize}"));
    }
    for i in 0..phnum {
        let at = phoff
            .checked_add(i * phentsize)
            .and_then(|a| usize::try_from(a).ok())
            .ok_or("program header offset out of range")?;
        if u32_at(bytes, at)? == PT_INTERP {
            return Ok(Linkage::Dynamic);
        }
    }
    Ok(Linkage::Static)
}

fn slice(bytes: &[u8], at: usize, len: usize) -> Result<&[u8], String> {
    at.checked_add(len)
        .and_then(|end| bytes.get(at..end))
        .ok_or_else(|| format!("ELF file truncated (need {len} bytes at offset {at})"))
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16, String> {
    let s = slice(bytes, at, 2)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, String> {
    let s = slice(bytes, at, 4)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> Result<u64, String> {
    let s = slice(bytes, at, 8)?;
    let mut b = [0u8; 8];
    b.copy_from_slice(s);
    Ok(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-byte ELF header followed by program headers of the given types.
    fn craft(e_type: u16, machine: u16, ph_types: &[u32]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // ELFCLASS64
        b[5] = 1; // little endian
        b[6] = 1; // version
        b[0x10..0x12].copy_from_slice(&e_type.to_le_bytes());
        b[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        b[0x38..0x3a].copy_from_slice(&(ph_types.len() as u16).to_le_bytes());
        for t in ph_types {
            let mut ph = [0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            b.extend_from_slice(&ph);
        }
        b
    }

    const PT_LOAD: u32 = 1;
    const PT_DYNAMIC: u32 = 2;
    const PT_PHDR: u32 = 6;

    #[test]
    fn static_and_static_pie() {
        let exe = craft(ET_EXEC, EM_X86_64, &[PT_LOAD, PT_LOAD]);
        assert_eq!(linkage(&exe), Ok(Linkage::Static));
        let pie = craft(ET_DYN, EM_X86_64, &[PT_PHDR, PT_LOAD, PT_DYNAMIC]);
        assert_eq!(linkage(&pie), Ok(Linkage::Static));
    }

    #[test]
    fn dynamic() {
        let exe = craft(
            ET_DYN,
            EM_X86_64,
            &[PT_PHDR, PT_INTERP, PT_LOAD, PT_DYNAMIC],
        );
        assert_eq!(linkage(&exe), Ok(Linkage::Dynamic));
    }

    #[test]
    fn rejects_garbage() {
        assert!(linkage(b"#!/bin/sh\necho hi\n").is_err());
        assert!(linkage(&craft(ET_EXEC, 183 /* aarch64 */, &[PT_LOAD])).is_err());
        assert!(linkage(&craft(1 /* ET_REL */, EM_X86_64, &[PT_LOAD])).is_err());
        let mut truncated = craft(ET_EXEC, EM_X86_64, &[PT_LOAD, PT_INTERP]);
        truncated.truncate(64 + 56 + 2);
        assert!(linkage(&truncated).is_err());
    }

    #[test]
    fn real_system_binary_is_dynamic() {
        // Debian's coreutils are dynamically linked; skip where absent.
        if let Ok(bytes) = std::fs::read("/bin/ls") {
            assert_eq!(linkage(&bytes), Ok(Linkage::Dynamic));
        }
    }
}
