#!/usr/bin/env python3
# Copyright 2026 The ChromiumOS Authors
# Use of this source code is governed by a BSD-style license that can be
# found in the LICENSE file.

"""Writes the seed corpora of the fuzz targets (message_dispatch, dma_memory).

Each seed is one control byte (see fuzz_targets/message_dispatch.rs: bits 0-6 cap the bytes a
read returns, 0 for none; bit 7 turns BAR emulation off) followed by a valid client stream:
VERSION, then the commands of one family; dma_memory's seeds are described at
dma_memory_seeds(). Usage: make_seeds.py [OUTPUT_DIR], which gets one directory per target.
"""

import json
import os
import struct
import sys

# Commands (protocol.rs).
VERSION, DMA_MAP, DMA_UNMAP, GET_INFO, GET_REGION_INFO, GET_REGION_IO_FDS = 1, 2, 3, 4, 5, 6
GET_IRQ_INFO, SET_IRQS, REGION_READ, REGION_WRITE, DMA_READ, DMA_WRITE = 7, 8, 9, 10, 11, 12
DEVICE_RESET, REGION_WRITE_MULTI, DEVICE_FEATURE, MIG_DATA_READ, MIG_DATA_WRITE = 13, 15, 16, 17, 18

REPLY, NO_REPLY = 0x1, 0x10
DATA_NONE, DATA_BOOL = 1 << 0, 1 << 1
ACTION_MASK, ACTION_UNMASK, ACTION_TRIGGER = 1 << 3, 1 << 4, 1 << 5
MAP_RW = 0x3
UNMAP_ALL = 0x2
CONFIG, BAR0, BAR2 = 7, 0, 2
INTX, MSIX, ERR, REQ = 0, 2, 3, 4

# The fuzz device's BAR0 registers: DMA source, destination, IRQ doorbell, DMA doorbell.
REG_DMA_SRC, REG_DMA_DST, REG_IRQ, REG_DMA_GO = 0x08, 0x10, 0x18, 0x20
DMA_LEN = 64


class Stream:
    """A client byte stream with message ids assigned in order."""

    def __init__(self):
        self.data = bytearray()
        self.next_id = 0

    def msg(self, command, body=b"", flags=0, msg_id=None, error=0):
        if msg_id is None:
            msg_id = self.next_id
            self.next_id = (self.next_id + 1) & 0xFFFF
        header = struct.pack("<HHIII", msg_id, command, 16 + len(body), flags, error)
        self.data += header + body
        return self

    def version(self):
        caps = {"capabilities": {"max_msg_fds": 16, "max_data_xfer_size": 1048576,
                                 "write_multiple": True}}
        text = json.dumps(caps, separators=(",", ":")).encode() + b"\0"
        return self.msg(VERSION, struct.pack("<HH", 0, 0) + text)

    def dma_map(self, address, size, flags=MAP_RW, offset=0):
        return self.msg(DMA_MAP, struct.pack("<IIQQQ", 32, flags, offset, address, size))

    def dma_unmap(self, address, size, flags=0):
        return self.msg(DMA_UNMAP, struct.pack("<IIQQ", 24, flags, address, size))

    def get_info(self, argsz=16):
        return self.msg(GET_INFO, struct.pack("<IIII", argsz, 0, 0, 0))

    def region_info(self, index, argsz=32):
        return self.msg(GET_REGION_INFO, struct.pack("<IIIIQQ", argsz, 0, index, 0, 0, 0))

    def io_fds(self, index, argsz=16):
        return self.msg(GET_REGION_IO_FDS, struct.pack("<IIII", argsz, 0, index, 0))

    def irq_info(self, index, argsz=16):
        return self.msg(GET_IRQ_INFO, struct.pack("<IIII", argsz, 0, index, 0))

    def set_irqs(self, flags, index, start, count, bools=b""):
        body = struct.pack("<IIIII", 20 + len(bools), flags, index, start, count) + bools
        return self.msg(SET_IRQS, body)

    def read(self, region, offset, count):
        return self.msg(REGION_READ, struct.pack("<QII", offset, region, count))

    def write(self, region, offset, data, flags=0):
        body = struct.pack("<QII", offset, region, len(data)) + data
        return self.msg(REGION_WRITE, body, flags=flags)

    def write32(self, region, offset, value):
        return self.write(region, offset, struct.pack("<I", value))

    def write64(self, region, offset, value):
        return self.write(region, offset, struct.pack("<Q", value))

    def write_multi(self, entries):
        body = struct.pack("<Q", len(entries))
        for region, offset, data in entries:
            body += struct.pack("<QII", offset, region, len(data)) + data.ljust(8, b"\0")
        return self.msg(REGION_WRITE_MULTI, body)

    def reply(self, command, msg_id, body=b"", error=0):
        """A reply to a request the server sent (DMA_READ/DMA_WRITE)."""
        flags = REPLY | (0x20 if error else 0)
        return self.msg(command, body, flags=flags, msg_id=msg_id, error=error)


def seeds():
    out = {}

    def seed(name, stream, control=0):
        out[name] = bytes([control]) + bytes(stream.data)

    seed("version", Stream().version())

    s = Stream().version()
    s.dma_map(0x100000, 0x1000).dma_map(0x101000, 0x1000, flags=1)
    s.dma_map(0x100000, 0x1000)  # The same map again: accepted.
    s.dma_unmap(0x101000, 0x1000).dma_unmap(0x100000, 0x800)  # Partial: refused.
    s.dma_map(0x200000, 0x2000).dma_unmap(0, 0, flags=UNMAP_ALL)
    seed("dma_map_unmap", s)

    s = Stream().version()
    s.get_info().get_info(argsz=8)
    for index in (0, 1, 2, 6, 7, 8, 9):
        for argsz in (32, 64, 16):
            s.region_info(index, argsz)
    for index in (0, 2, 7, 9):
        s.io_fds(index)
    s.io_fds(0, argsz=8)
    seed("device_info", s)

    s = Stream().version()
    for index in range(6):
        s.irq_info(index)
    s.set_irqs(DATA_NONE | ACTION_TRIGGER, MSIX, 0, 4)
    s.set_irqs(DATA_NONE | ACTION_MASK, MSIX, 1, 2)
    s.set_irqs(DATA_BOOL | ACTION_UNMASK, MSIX, 0, 4, bytes([1, 0, 1, 1]))
    s.set_irqs(DATA_BOOL | ACTION_TRIGGER, INTX, 0, 1, b"\1")
    s.set_irqs(DATA_NONE | ACTION_UNMASK, INTX, 0, 1)
    s.set_irqs(DATA_NONE | ACTION_MASK, ERR, 0, 1)
    s.set_irqs(DATA_NONE | ACTION_TRIGGER, REQ, 0, 1)
    s.set_irqs(DATA_NONE | ACTION_TRIGGER, MSIX, 0, 0)  # Disables the index.
    s.write(BAR0, REG_IRQ, b"\2").write(BAR0, REG_IRQ, b"\5")  # Device-side triggers.
    seed("irqs", s)

    s = Stream().version()
    for offset in range(0x10, 0x28, 4):
        s.write32(CONFIG, offset, 0xFFFFFFFF)
    s.write32(CONFIG, 0x30, 0xFFFFFFFF)
    s.read(CONFIG, 0, 256)
    s.write32(CONFIG, 0x10, 0xFEBF0000).write32(CONFIG, 0x14, 0x1)
    s.write(CONFIG, 0x0E, b"\xAA" * 4)  # Straddles device and emulated bytes.
    s.read(CONFIG, 0x0E, 8).read(CONFIG, 0xFC, 4).read(CONFIG, 0xFE, 4)
    seed("config_bar_sizing", s)
    seed("config_bar_sizing_no_emulation", s, control=0x80)

    s = Stream().version()
    s.write(BAR0, 0x100, bytes(range(32))).read(BAR0, 0x100, 32).read(BAR0, 0x3FF8, 8)
    s.read(BAR0, 0x3FFC, 8).read(BAR0, 0x4000, 0)
    s.write(BAR2, 0x0, b"hello").read(BAR2, 0x0, 5).read(BAR2, 0xFFF0, 16)
    s.write(BAR2, 0x10, b"\0" * 8, flags=NO_REPLY)
    s.read(1, 0, 0).read(3, 0, 4).read(9, 0, 4)
    s.write_multi([(BAR0, 0x200, b"\1\2\3\4"), (CONFIG, 0x40, b"\5" * 8), (BAR2, 0x8, b"\6")])
    s.write_multi([(BAR0, 0x200, b"\1" * 8)] * 3)
    s.msg(DEVICE_RESET).read(BAR0, 0x100, 4)
    seed("regions", s)
    seed("regions_short_reads", s, control=3)

    # The device copies DMA_LEN bytes from BAR0[0x08] to BAR0[0x10] on a write to BAR0[0x20]; the
    # map has no fd, so the server asks the client with DMA_READ (id 0) and DMA_WRITE (id 1).
    s = Stream().version()
    s.dma_map(0x100000, 0x1000)
    s.write64(BAR0, REG_DMA_SRC, 0x100000).write64(BAR0, REG_DMA_DST, 0x100800)
    s.write32(BAR0, REG_DMA_GO, 1)
    s.get_info()  # A command while the server waits: queued.
    s.reply(DMA_READ, 0, struct.pack("<QQ", 0x100000, DMA_LEN) + bytes(range(DMA_LEN)))
    s.reply(DMA_WRITE, 1, struct.pack("<QQ", 0x100800, DMA_LEN))
    s.write32(BAR0, REG_DMA_GO, 1)
    s.reply(DMA_READ, 2, struct.pack("<QQ", 0x100000, DMA_LEN), error=14)  # Refused.
    s.write64(BAR0, REG_DMA_SRC, 0x200000).write32(BAR0, REG_DMA_GO, 1)  # Outside the maps.
    s.dma_unmap(0x100000, 0x1000)
    seed("dma_through_client", s)

    s = Stream().version()
    s.msg(DEVICE_RESET, flags=NO_REPLY).msg(DEVICE_RESET)
    s.msg(DEVICE_FEATURE, struct.pack("<II", 8, 0)).msg(DEVICE_FEATURE, struct.pack("<II", 4, 0))
    s.msg(MIG_DATA_READ, struct.pack("<II", 8, 16)).msg(MIG_DATA_READ, struct.pack("<II", 8, 1 << 21))
    s.msg(MIG_DATA_WRITE, struct.pack("<II", 8, 2) + b"ab")
    s.msg(DMA_READ, struct.pack("<QQ", 0, 8)).msg(99).msg(GET_INFO, flags=0x2)
    seed("misc_commands", s)

    return out


# The dma_memory target's device: BAR0 address, length, access doorbell, truncate register.
REG_ADDRESS, REG_LEN, REG_GO, REG_TRUNCATE = 0x00, 0x08, 0x10, 0x18
READ, WRITE, SLICE_READ, SLICE_WRITE = 0, 1, 2, 3
SEAL_SHRINK, SEAL_GROW, SEAL_WRITE = 1, 2, 4


def dma_memory_seeds():
    """Seeds of the dma_memory target: four memfds (pages, seals), then a stream whose DMA_MAPs
    carry memfd msg_id % 5 (4: none)."""
    out = {}
    layout = bytes([16, 0, 16, SEAL_SHRINK | SEAL_GROW, 1, 0, 1, SEAL_WRITE])

    def access(s, address, length, op):
        s.write64(BAR0, REG_ADDRESS, address).write32(BAR0, REG_LEN, length)
        return s.write32(BAR0, REG_GO, op)

    def truncate(s, index, pages):
        return s.write32(BAR0, REG_TRUNCATE, index | pages << 8)

    s = Stream().version()
    s.msg(DMA_MAP, struct.pack("<IIQQQ", 32, MAP_RW, 0, 0x100000, 0x10000), msg_id=5)
    s.msg(DMA_MAP, struct.pack("<IIQQQ", 32, MAP_RW, 0, 0x200000, 0x10000), msg_id=6)
    for op in (WRITE, READ, SLICE_WRITE, SLICE_READ):
        access(s, 0x100000, 0x3000, op)
        access(s, 0x10f000, 0x2000, op)  # Runs past the map.
    truncate(s, 0, 1)  # Under the map: the next access faults.
    access(s, 0x102000, 0x100, READ)
    access(s, 0x100000, 0x100, SLICE_WRITE)
    truncate(s, 1, 1)  # Sealed against shrinking: refused, the map stays whole.
    access(s, 0x208000, 0x1000, WRITE)
    s.dma_unmap(0, 0, flags=UNMAP_ALL)
    out["truncate_under_maps"] = layout + bytes(s.data)

    s = Stream().version()
    s.msg(DMA_MAP, struct.pack("<IIQQQ", 32, MAP_RW, 0, 0x300000, 0x2000), msg_id=7)  # 1 page.
    s.msg(DMA_MAP, struct.pack("<IIQQQ", 32, MAP_RW, 0x1000, 0x300000, 0x1000), msg_id=7)
    s.msg(DMA_MAP, struct.pack("<IIQQQ", 32, MAP_RW, 0, 0x400000, 0x1000), msg_id=8)  # Sealed.
    s.msg(DMA_MAP, struct.pack("<IIQQQ", 32, 1, 0, 0x400000, 0x1000), msg_id=8)  # Read-only.
    s.msg(DMA_MAP, struct.pack("<IIQQQ", 32, MAP_RW, 0, 0x500000, 0x1000), msg_id=9)  # No fd.
    access(s, 0x400000, 0x1000, WRITE)
    access(s, 0x500000, 0x10, READ)
    s.dma_unmap(0x400000, 0x1000)
    out["vetted_maps"] = layout + bytes(s.data)
    return out


def write_seeds(out_dir, found):
    os.makedirs(out_dir, exist_ok=True)
    for name, data in found.items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "seeds")
    write_seeds(os.path.join(out_dir, "message_dispatch"), seeds())
    write_seeds(os.path.join(out_dir, "dma_memory"), dma_memory_seeds())


if __name__ == "__main__":
    main()
