"""cgroup v2 device rules as a BPF_PROG_TYPE_CGROUP_DEVICE program.

cgroup v2 has no devices.allow/deny files: the kernel asks a BPF program attached to
the cgroup about every device open and mknod (runc#2167; runc's devicefilter).
``compile_device_program()`` is pure (rules → instructions, unit-tested with a small
interpreter); ``attach_device_program()`` loads it and attaches it to a directory.

Semantics follow v1's list: a wildcard "a *:* rwm" rule resets the default verdict,
later rules win over earlier ones. The program checks the rules newest-first and
returns the first match's verdict, else the default. An allow rule matches when every
requested access is in its access set; a deny rule when any requested access is.
"""

from __future__ import annotations

import os
import struct

from ociimg.errors import ContainerError
from ociimg.oskit import linux
from ociimg.runtime.cgroups.common import DeviceRule

# struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; };
# access_type = (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_*
DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
_ACCESS_BITS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}
_TYPES = {"b": DEV_BLOCK, "c": DEV_CHAR}

# Opcodes (linux/bpf_common.h, linux/bpf.h) for the few instructions we emit.
LDX_MEM_W = 0x61   # dst = *(u32 *)(src + off)
MOV64_X = 0xBF     # dst = src
MOV64_K = 0xB7     # dst = imm
AND64_K = 0x57     # dst &= imm
RSH64_K = 0x77     # dst >>= imm
JEQ_K = 0x15       # if dst == imm: pc += off
JNE_K = 0x55       # if dst != imm: pc += off
JSET_K = 0x45      # if dst & imm: pc += off
EXIT = 0x95

Insn = tuple[int, int, int, int, int]  # (opcode, dst, src, off, imm)


def _access_mask(access: str) -> int:
    mask = 0
    for ch in access:
        mask |= _ACCESS_BITS[ch]
    return mask


def effective_rules(rules: list[DeviceRule]) -> tuple[bool, list[DeviceRule]]:
    """(default verdict, the rules after the last full wildcard), in order."""
    default, kept = False, []
    for rule in rules:
        if rule.type == "a" and rule.major < 0 and rule.minor < 0 and \
                _access_mask(rule.access) == 7:
            default, kept = rule.allow, []
        else:
            kept.append(rule)
    return default, kept


def _rule_block(rule: DeviceRule) -> list[Insn]:
    """Instructions that return the rule's verdict when it matches; every jump lands
    just past the block (offsets fixed up at the end)."""
    block: list[Insn] = []
    skip = -1  # placeholder offset
    if rule.type in _TYPES:
        block.append((JNE_K, 3, 0, skip, _TYPES[rule.type]))
    mask = _access_mask(rule.access)
    if rule.allow:
        if mask != 7:  # some requested access outside the allowed set → no match
            block.append((JSET_K, 4, 0, skip, 7 & ~mask))
    else:
        if mask != 7:  # none of the requested accesses is denied → no match
            block += [(MOV64_X, 7, 4, 0, 0), (AND64_K, 7, 0, 0, mask),
                      (JEQ_K, 7, 0, skip, 0)]
    if rule.major >= 0:
        block.append((JNE_K, 5, 0, skip, rule.major))
    if rule.minor >= 0:
        block.append((JNE_K, 6, 0, skip, rule.minor))
    block += [(MOV64_K, 0, 0, 0, int(rule.allow)), (EXIT, 0, 0, 0, 0)]
    n = len(block)
    return [(op, d, s, (n - i - 1) if off == skip else off, imm)
            for i, (op, d, s, off, imm) in enumerate(block)]


def compile_device_program(rules: list[DeviceRule]) -> list[Insn]:
    default, kept = effective_rules(rules)
    program: list[Insn] = [
        (LDX_MEM_W, 2, 1, 0, 0),           # r2 = access_type
        (MOV64_X, 3, 2, 0, 0),
        (AND64_K, 3, 0, 0, 0xFFFF),        # r3 = device type
        (MOV64_X, 4, 2, 0, 0),
        (RSH64_K, 4, 0, 0, 16),            # r4 = requested access
        (LDX_MEM_W, 5, 1, 4, 0),           # r5 = major
        (LDX_MEM_W, 6, 1, 8, 0),           # r6 = minor
    ]
    for rule in reversed(kept):  # later rules win
        program += _rule_block(rule)
    program += [(MOV64_K, 0, 0, 0, int(default)), (EXIT, 0, 0, 0, 0)]
    return program


def encode(program: list[Insn]) -> bytes:
    """struct bpf_insn: u8 code, u8 dst:4|src:4 (little-endian bitfields), s16, s32."""
    return b"".join(struct.pack("<BBhi", op, (src << 4) | dst, off, imm)
                    for op, dst, src, off, imm in program)


def attach_device_program(cgroup_dir: str, rules: list[DeviceRule]) -> None:
    insns = encode(compile_device_program(rules))
    try:
        prog_fd = linux.bpf_load_cgroup_device_prog(insns)
    except OSError as exc:
        raise ContainerError(f"cgroup: load the device filter for {cgroup_dir}: {exc}",
                             hint="the kernel needs CONFIG_CGROUP_BPF and CAP_SYS_ADMIN "
                                  "(or CAP_BPF)") from exc
    try:
        dir_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            linux.bpf_attach_cgroup_device_prog(dir_fd, prog_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise ContainerError(f"cgroup: attach the device filter to {cgroup_dir}: {exc}",
                             hint="is this a cgroup2 directory?") from exc
    finally:
        os.close(prog_fd)  # the attachment keeps the program alive
