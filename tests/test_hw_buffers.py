"""Core buffers (hw/buffers.py): DMA words land in the right entry bytes, the compute side
sees whole entries, OBUF words read back, and a clear zeroes everything."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from vdla import isa
from vdla.config import get_config
from vdla.hw.buffers import CoreBuffers

SMALL = get_config("small").replace(ibuf_depth=12, wbuf_depth=4, pbuf_depth=16, obuf_depth=6)


@pytest.mark.parametrize("icp", [8, 16])
def test_dma_words_compute_entries_and_clear(icp):
    config = SMALL.replace(icp=icp, ocp=8)
    cb = config.cb
    dut = CoreBuffers(config)
    rng = np.random.default_rng(icp)
    # Byte images of the buffers as the golden model keeps them.
    model = {isa.Buffer.IBUF: np.zeros(config.ibuf_depth * cb, np.uint8),
             isa.Buffer.WBUF: np.zeros(config.wbuf_depth * cb * cb, np.uint8),
             isa.Buffer.PBUF: np.zeros(config.pbuf_depth * 16, np.uint8)}
    writes = []
    for buf, image in model.items():
        for word in rng.choice(len(image) // 8, size=6, replace=False):
            value = int(rng.integers(0, 1 << 63)) * 2 + 1
            writes.append((buf, int(word), value))
            image[word * 8:word * 8 + 8] = np.frombuffer(value.to_bytes(8, "little"), np.uint8)
    ports = {isa.Buffer.IBUF: (dut.ibuf_read, cb), isa.Buffer.WBUF: (dut.wbuf_read, cb * cb),
             isa.Buffer.PBUF: (dut.pbuf_read, 16)}

    async def read(ctx, port, addr):
        ctx.set(port.addr, addr)
        ctx.set(port.en, 1)
        await ctx.tick()
        return ctx.get(port.data.as_value())

    async def bench(ctx):
        w = dut.dma_write
        for buf, word, value in writes:
            ctx.set(w.buf, buf)
            ctx.set(w.addr, word)
            ctx.set(w.data, value)
            ctx.set(w.en, 1)
            await ctx.tick()
        ctx.set(w.en, 0)
        for buf, image in model.items():
            port, nbytes = ports[buf]
            for entry in range(len(image) // nbytes):
                got = await read(ctx, port, entry)
                want = int.from_bytes(image[entry * nbytes:(entry + 1) * nbytes].tobytes(),
                                      "little")
                assert got == want, (buf, entry)
        # Compute writes single OBUF lanes; SAVE reads 8-byte words.
        o = dut.obuf_write
        ctx.set(o.addr, 3)
        ctx.set(o.data.as_value(), int.from_bytes(bytes(range(1, cb + 1)), "little"))
        ctx.set(o.en, 0b101)
        await ctx.tick()
        ctx.set(o.en, 0)
        r = dut.dma_read
        ctx.set(r.addr, 3 * cb // 8)
        ctx.set(r.en, 1)
        await ctx.tick()
        ctx.set(r.en, 0)
        assert ctx.get(r.data) == 1 | 3 << 16
        # Clear: busy for the deepest buffer's depth, then everything reads zero.
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        busy = 0
        while ctx.get(dut.clear_busy):
            busy += 1
            await ctx.tick()
        assert busy == max(config.ibuf_depth, config.wbuf_depth, config.pbuf_depth,
                           config.obuf_depth)
        for buf, image in model.items():
            port, nbytes = ports[buf]
            for entry in range(len(image) // nbytes):
                assert await read(ctx, port, entry) == 0
        ctx.set(r.addr, 3 * cb // 8)
        ctx.set(r.en, 1)
        await ctx.tick()
        assert ctx.get(r.data) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
