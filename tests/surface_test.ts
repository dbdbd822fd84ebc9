import { runtime } from "../ffi/runtime.ts";
import assert from "node:assert/strict";
import { ClosedError, LockStateError, PIXEL_FORMATS, Surface } from "../mod.ts";
import { computeGeometry } from "../src/core/geometry.ts";
import { backingOf } from "../src/surface/surface.ts";
import type { MemfdSurface } from "../src/linux/surface.ts";
import { libc } from "../ffi/linux.ts";
import {
  collectGarbage,
  fdCount,
  fdTargets,
  memfdMappings,
  openFds,
  settleRuntimeFds,
} from "./helpers.ts";

const linux = Deno.build.os === "linux";

Deno.test({
  name: "surface: every format's plane geometry",
  ignore: !linux,
  fn() {
    const expected = {
      BGRA: [[1920, 1080, 4, 7680, 0]],
      RGBA: [[1920, 1080, 4, 7680, 0]],
      L008: [[1920, 1080, 1, 1920, 0]],
      "420v": [[1920, 1080, 1, 1920, 0], [960, 540, 2, 1920, 1920 * 1080]],
      "420f": [[1920, 1080, 1, 1920, 0], [960, 540, 2, 1920, 1920 * 1080]],
      y420: [
        [1920, 1080, 1, 1920, 0],
        [960, 540, 1, 960, 1920 * 1080],
        [960, 540, 1, 960, 1920 * 1080 + 960 * 540],
      ],
    } as const;
    for (const format of PIXEL_FORMATS) {
      using surface = Surface.create({ width: 1920, height: 1080, format });
      assert.equal(surface.format, format);
      assert.equal(surface.width, 1920);
      assert.equal(surface.height, 1080);
      const planes = surface.planes.map((
        p,
      ) => [p.width, p.height, p.bytesPerElement, p.bytesPerRow, p.offset]);
      assert.deepEqual(planes, expected[format], format);
      const last = surface.planes.at(-1)!;
      assert.ok(surface.allocSize >= last.offset + last.bytesPerRow * last.height);
      assert.equal(surface.allocSize % 4096, 0);
      for (let p = 0; p < surface.planes.length; p++) {
        assert.equal(
          surface.bytes(p).length,
          surface.planes[p].bytesPerRow * surface.planes[p].height,
        );
      }
    }
  },
});

Deno.test("geometry: rows are padded to 64 bytes", () => {
  const g = computeGeometry(33, 10, "BGRA");
  assert.equal(g.planes[0].bytesPerRow, 192); // 132 rounded up
  const nv12 = computeGeometry(34, 10, "420v");
  assert.deepEqual(nv12.planes.map((p) => p.bytesPerRow), [64, 64]);
  assert.equal(nv12.planes[1].offset, 640);
  assert.equal(nv12.allocSize, 4096);
});

Deno.test({
  name: "surface: bytes() writes are visible through a second mapping of the same memfd",
  ignore: !linux,
  fn() {
    using surface = Surface.create({ width: 64, height: 4, format: "420v" });
    surface.bytes(0).fill(0x11);
    surface.bytes(1).fill(0x22);
    const backing = backingOf(surface, "test") as MemfdSurface;
    const lib = libc();
    const size = BigInt(surface.allocSize);
    const other = lib.mmap(null, size, 1, 1, backing.fd, 0n)!;
    try {
      const view = new Uint8Array(runtime.arrayBufferAt(other, surface.allocSize));
      assert.equal(view[0], 0x11);
      assert.equal(view[surface.planes[1].offset], 0x22);
      assert.equal(view[surface.planes[1].offset - 1], 0x11);
    } finally {
      lib.munmap(other, size);
    }
  },
});

Deno.test({
  name: "surface: the memfd is sealed: ftruncate cannot shrink or grow it",
  ignore: !linux,
  fn() {
    using surface = Surface.create({ width: 16, height: 16 });
    const backing = backingOf(surface, "test") as MemfdSurface;
    const lib = libc();
    assert.equal(lib.ftruncate(backing.fd, 0n), -1, "shrink must fail");
    assert.equal(lib.ftruncate(backing.fd, BigInt(surface.allocSize * 2)), -1, "grow must fail");
    const seals = lib.fcntl(backing.fd, 1034, /* F_GET_SEALS */ 0);
    assert.equal(seals & 7, 7, `seals 0x${seals.toString(16)}: SEAL, SHRINK and GROW`);
    const flags = lib.fcntl(backing.fd, 1, /* F_GETFD */ 0);
    assert.equal(flags & 1, 1, "FD_CLOEXEC");
  },
});

Deno.test({
  name: "surface: id is the memfd inode; close is idempotent; dispose works with using",
  ignore: !linux,
  fn() {
    const surface = Surface.create({ width: 8, height: 8 });
    const backing = backingOf(surface, "test") as MemfdSurface;
    const stat = new Uint8Array(256);
    assert.equal(libc().statx(backing.fd, new Uint8Array(1), 0x1000, 0x100, stat), 0);
    assert.equal(surface.id, Number(new DataView(stat.buffer).getBigUint64(32, true)));
    surface.close();
    surface.close();
    assert.equal(surface.closed, true);
    let inner: Surface;
    {
      using s = Surface.create({ width: 8, height: 8 });
      inner = s;
      assert.equal(s.closed, false);
    }
    assert.equal(inner.closed, true);
  },
});

Deno.test({
  name: "surface: views taken before close() are detached, not dangling",
  ignore: !linux,
  fn() {
    const surface = Surface.create({ width: 256, height: 256 });
    const view = surface.bytes();
    view.fill(9);
    const plane0 = surface.bytes(0);
    surface.close();
    assert.equal(view.length, 0);
    assert.equal(view[0], undefined);
    view[0] = 1; // dropped, no crash
    assert.equal(plane0.byteLength, 0);
    assert.throws(() => surface.bytes(), ClosedError);
    assert.throws(() => surface.inUse, ClosedError);
    assert.throws(() => surface.lock(), ClosedError);
  },
});

Deno.test({
  name: "surface: lock/unlock follow IOSurfaceLock's rules",
  ignore: !linux,
  fn() {
    using surface = Surface.create({ width: 8, height: 8 });
    assert.throws(() => surface.unlock(), LockStateError);
    surface.lock({ readOnly: true });
    surface.lock({ readOnly: true });
    assert.throws(() => surface.lock(), LockStateError, "mode mismatch while locked");
    assert.throws(() => surface.unlock(), LockStateError, "unlock mode must match");
    surface.unlock({ readOnly: true });
    surface.unlock({ readOnly: true });
    assert.throws(() => surface.unlock({ readOnly: true }), LockStateError);
    surface.lock();
    surface.close(); // closing drops the lock
  },
});

Deno.test("surface: bad arguments fail with TypeError/RangeError before any system call", () => {
  const bad: [unknown, ErrorConstructor][] = [
    [{ width: 0, height: 10 }, RangeError],
    [{ width: -1, height: 10 }, RangeError],
    [{ width: 1.5, height: 10 }, RangeError],
    [{ width: 10, height: Number.NaN }, RangeError],
    [{ width: 10, height: Infinity }, RangeError],
    [{ width: 40000, height: 10 }, RangeError],
    [{ width: 32768, height: 32768 }, RangeError], // 4 GiB, over the 1 GiB default
    [{ width: 1024, height: 1024, maxBytes: 1024 }, RangeError],
    [{ width: "10", height: 10 }, TypeError],
    [{ width: 10, height: 10, format: "YUY2" }, TypeError],
    [{ width: 10, height: 10, format: "nv12" }, TypeError], // aliases are case-sensitive, like the codes
    [{ width: 11, height: 10, format: "420v" }, RangeError],
    [{ width: 10, height: 11, format: "y420" }, RangeError],
    [null, TypeError],
  ];
  const before = fdCount();
  for (const [options, type] of bad) {
    assert.throws(() => Surface.create(options as never), type, JSON.stringify(options));
  }
  assert.equal(fdCount(), before);
  assert.throws(() => Surface.create({ width: 8, height: 8 }).bytes(3), RangeError);
});

Deno.test({
  name: "surface: a surface dropped without close() is unmapped and its fd closed by the finalizer",
  ignore: !linux,
  sanitizeResources: false,
  async fn() {
    await settleRuntimeFds();
    await collectGarbage();
    const baseline = openFds();
    const before = baseline.length;
    const mappedBefore = memfdMappings().length;
    (() => {
      for (let i = 0; i < 20; i++) Surface.create({ width: 320, height: 240 }).bytes().fill(1);
    })();
    assert.equal(fdCount(), before + 20, "each surface holds one fd");
    assert.equal(memfdMappings().length, mappedBefore + 20, "each surface holds one mapping");
    await collectGarbage();
    assert.equal(fdCount(), before, `leaked:\n${fdTargets(baseline).join("\n")}`);
    const mapped = memfdMappings();
    assert.equal(mapped.length, mappedBefore, `mappings left:\n${mapped.join("\n")}`);
  },
});

Deno.test({
  name: "surface: a live view keeps its surface (and mapping) alive through GC",
  ignore: !linux,
  sanitizeResources: false,
  async fn() {
    await settleRuntimeFds();
    const view = (() => {
      const s = Surface.create({ width: 64, height: 64 });
      s.bytes().fill(42);
      return s.bytes();
    })();
    await collectGarbage();
    assert.equal(view.length, 64 * 256);
    assert.equal(view[100], 42, "memory still mapped");
  },
});

Deno.test({
  name: "surface: inUse is false for a fresh surface",
  ignore: !linux,
  fn() {
    using surface = Surface.create({ width: 8, height: 8 });
    assert.equal(surface.inUse, false);
  },
});
