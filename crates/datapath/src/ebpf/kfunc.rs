//! The kernel functions (kfuncs) the programs call. aya 0.14 cannot relocate kfunc calls, so
//! `bpf/lib/kern_ctx.h` calls a placeholder helper id, and [`object`] rewrites every such call
//! in a copy of the object before aya sees it: into the kfunc call, by the kfunc's BTF id in the
//! running kernel, or into `r0 = 0` where the kernel has no such kfunc (before 6.2, or without
//! BTF), which the programs take as "ask the checksum helpers". Instructions are encoded
//! little-endian, as the object is on the architectures masq is built for (x86_64, arm64).

use std::sync::OnceLock;

use aya_obj::btf::BtfKind;

use super::OBJECT;

/// The placeholder of `bpf_cast_to_kern_ctx`; `MASQ_KFUNC_CAST_TO_KERN_CTX` in kern_ctx.h.
pub const CAST_TO_KERN_CTX_PLACEHOLDER: u32 = 0x6d61_7301;

/// What the placeholder calls become.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernCtx {
    /// A call of the kfunc with this BTF id in vmlinux.
    Kfunc(u32),
    /// `r0 = 0`: the programs leave transport checksums to the helpers.
    Absent,
}

impl KernCtx {
    /// What the running kernel offers; looked up in its BTF once per process.
    pub fn detect() -> KernCtx {
        static DETECTED: OnceLock<KernCtx> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            aya::Btf::from_sys_fs()
                .ok()
                .and_then(|btf| {
                    btf.id_by_type_name_kind("bpf_cast_to_kern_ctx", BtfKind::Func)
                        .ok()
                })
                .map_or(KernCtx::Absent, KernCtx::Kfunc)
        })
    }

    /// The 8 bytes of one rewritten instruction.
    fn instruction(self) -> [u8; 8] {
        const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
        const MOV64_IMM: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
        const PSEUDO_KFUNC_CALL_SRC: u8 = 2 << 4; // src_reg, the high nibble
        let mut insn = [0u8; 8];
        match self {
            KernCtx::Kfunc(btf_id) => {
                insn[0] = CALL;
                insn[1] = PSEUDO_KFUNC_CALL_SRC;
                // off 0: the id is in vmlinux's BTF, not a module's.
                insn[4..].copy_from_slice(&btf_id.to_le_bytes());
            }
            KernCtx::Absent => insn[0] = MOV64_IMM, // r0 = 0
        }
        insn
    }
}

/// An ELF image kept 8-byte aligned, as the object parser wants it.
pub struct AlignedObject {
    words: Vec<u64>,
    len: usize,
}

impl AlignedObject {
    fn new(bytes: &[u8]) -> AlignedObject {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            *word = u64::from_ne_bytes(buf);
        }
        AlignedObject {
            words,
            len: bytes.len(),
        }
    }

    /// The image, for `EbpfLoader::load`.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the words own at least `len` initialized bytes; u8 has no alignment needs.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    /// Rewrites every placeholder call; returns how many there were.
    fn patch(&mut self, kern_ctx: KernCtx) -> usize {
        let placeholder = {
            let mut insn = [0u8; 8];
            insn[0] = 0x85; // a helper call: src_reg 0
            insn[4..].copy_from_slice(&CAST_TO_KERN_CTX_PLACEHOLDER.to_le_bytes());
            u64::from_ne_bytes(insn)
        };
        let replacement = u64::from_ne_bytes(kern_ctx.instruction());
        // Instructions are 8-byte aligned in their sections, and sections in the file.
        let mut count = 0;
        for word in self.words.iter_mut().filter(|word| **word == placeholder) {
            *word = replacement;
            count += 1;
        }
        count
    }
}

/// The programs' object with the placeholder calls rewritten for `kern_ctx`.
pub fn object(kern_ctx: KernCtx) -> AlignedObject {
    patched(OBJECT, kern_ctx)
}

/// Any object built from masq's BPF sources (the benchmark's harness too), rewritten the same way.
pub fn patched(object: &[u8], kern_ctx: KernCtx) -> AlignedObject {
    let mut object = AlignedObject::new(object);
    let patched = object.patch(kern_ctx);
    debug_assert!(patched > 0, "no kfunc placeholder in the object");
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_rewritten_and_nothing_else_changes() {
        for kern_ctx in [KernCtx::Kfunc(0x1234), KernCtx::Absent] {
            let mut object = AlignedObject::new(OBJECT);
            // Egress, steer and ingress each rewrite at least once.
            assert!(object.patch(kern_ctx) >= 3, "{kern_ctx:?}");
            assert_eq!(object.patch(kern_ctx), 0, "{kern_ctx:?}: patched twice");
            let changed = object
                .bytes()
                .chunks(8)
                .zip(OBJECT.chunks(8))
                .filter(|(new, old)| new != old)
                .count();
            assert!(changed >= 3);
            assert_eq!(object.bytes().len(), OBJECT.len());
        }
    }

    #[test]
    fn kfunc_call_encoding() {
        assert_eq!(
            KernCtx::Kfunc(0x0102_0304).instruction(),
            [0x85, 0x20, 0, 0, 0x04, 0x03, 0x02, 0x01]
        );
        assert_eq!(KernCtx::Absent.instruction(), [0xb7, 0, 0, 0, 0, 0, 0, 0]);
    }
}
