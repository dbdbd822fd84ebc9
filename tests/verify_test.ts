/**
 * The descriptor checks of `src/linux/verify.ts` called directly: what a
 * sender can still change after the check (seals it adds later, its mode)
 * ends as a `ProtocolError` at mapping time, or cannot touch a mapping that
 * exists.
 *
 * @module
 */

import { runtime } from "../ffi/runtime.ts";
import assert from "node:assert/strict";
import { ProtocolError } from "../mod.ts";
import { computeGeometry } from "../src/core/geometry.ts";
import { LINUX } from "../src/linux/structs.ts";
import { checkKnownMemfd, mapVerifiedMemfd, verifyMemfd } from "../src/linux/verify.ts";
import { fstatx, libc } from "../src/linux/libc.ts";
import { closeAll, makeMemfd, rawLibc, reopenAs } from "./hostile/raw.ts";

const linux = Deno.build.os === "linux";
const GEOMETRY = computeGeometry(64, 32, "BGRA");
const LIMITS = { maxSurfaceBytes: 1 << 30 };
const SIZE_SEALS = LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW;

function reason(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (error instanceof ProtocolError) return error.reason;
    throw error;
  }
  return "passed";
}

Deno.test({
  name: "verify: a write seal added after the check makes the mapping a ProtocolError",
  ignore: !linux,
  fn() {
    for (const seal of [LINUX.F_SEAL_WRITE, LINUX.F_SEAL_FUTURE_WRITE]) {
      // Sealing left open (F_SEAL_SEAL missing), as a foreign allocator might.
      const fd = makeMemfd(GEOMETRY.allocSize, { seals: SIZE_SEALS });
      try {
        const verified = verifyMemfd(fd, GEOMETRY, LIMITS);
        assert.equal(verified.size, GEOMETRY.allocSize);
        assert.equal(rawLibc().fcntl(fd, LINUX.F_ADD_SEALS, seal), 0);
        assert.equal(reason(() => mapVerifiedMemfd(fd, verified.size)), "WRITE_SEALED");
      } finally {
        closeAll(fd);
      }
    }
  },
});

Deno.test({
  name:
    "verify: once mapped, a late F_SEAL_WRITE is refused (EBUSY) and F_SEAL_FUTURE_WRITE leaves the mapping writable",
  ignore: !linux,
  fn() {
    const fd = makeMemfd(GEOMETRY.allocSize, { seals: SIZE_SEALS });
    const size = GEOMETRY.allocSize;
    const pointer = mapVerifiedMemfd(fd, verifyMemfd(fd, GEOMETRY, LIMITS).size);
    try {
      assert.ok(rawLibc().fcntl(fd, LINUX.F_ADD_SEALS, LINUX.F_SEAL_WRITE) < 0, "EBUSY");
      assert.equal(rawLibc().fcntl(fd, LINUX.F_ADD_SEALS, LINUX.F_SEAL_FUTURE_WRITE), 0);
      const bytes = new Uint8Array(runtime.arrayBufferAt(pointer, size));
      bytes[size - 1] = 7; // still writable: no SIGSEGV
      assert.equal(bytes[size - 1], 7);
    } finally {
      libc().munmap(pointer, BigInt(size));
      closeAll(fd);
    }
  },
});

Deno.test({
  name: "verify: the order is seals, size, access mode, and every refusal has its own reason",
  ignore: !linux,
  fn() {
    const cases: [string, () => number, string][] = [
      // A right-size memfd with no seals: the size is not final, so it must not be what fails.
      ["unsealed, right size", () => makeMemfd(GEOMETRY.allocSize, { seals: 0 }), "UNSEALED"],
      // Wrong size *and* unsealed: still UNSEALED (seals are checked first).
      ["unsealed, wrong size", () => makeMemfd(4096, { seals: 0 }), "UNSEALED"],
      ["sealed, wrong size", () => makeMemfd(4096), "SIZE_MISMATCH"],
      [
        "sealed, wrong size, O_RDONLY",
        () => {
          const memfd = makeMemfd(4096);
          try {
            return reopenAs(memfd, LINUX.O_RDONLY);
          } finally {
            closeAll(memfd);
          }
        },
        "SIZE_MISMATCH",
      ],
      ["sealed, right size", () => makeMemfd(GEOMETRY.allocSize), "passed"],
    ];
    for (const [what, make, expected] of cases) {
      const fd = make();
      try {
        assert.equal(reason(() => verifyMemfd(fd, GEOMETRY, LIMITS)), expected, what);
      } finally {
        closeAll(fd);
      }
    }
  },
});

Deno.test({
  name: "verify: the geometry and the limit are checked too (for memory a bridge adopts)",
  ignore: !linux,
  fn() {
    const fd = makeMemfd(GEOMETRY.allocSize);
    try {
      assert.equal(reason(() => verifyMemfd(fd, GEOMETRY, { maxSurfaceBytes: 4096 })), "TOO_LARGE");
      const bad = { ...GEOMETRY, planes: [{ ...GEOMETRY.planes[0], bytesPerRow: 4 }] };
      assert.equal(reason(() => verifyMemfd(fd, bad, LIMITS)), "BAD_GEOMETRY");
      // A known inode: size and access mode only.
      assert.equal(reason(() => checkKnownMemfd(fd, Number(fstatx(fd).size), GEOMETRY)), "passed");
      const other = computeGeometry(64, 64, "BGRA");
      assert.equal(
        reason(() => checkKnownMemfd(fd, Number(fstatx(fd).size), other)),
        "SIZE_MISMATCH",
      );
    } finally {
      closeAll(fd);
    }
  },
});
