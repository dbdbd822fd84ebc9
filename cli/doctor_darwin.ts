/**
 * `surfaceport doctor` on macOS: which shim was loaded from where (and its
 * hash), its ABI report against the tables, then every assumption the
 * macOS backend was written on that only a Mac can confirm (docs/macos.md,
 * "What only a Mac can tell"), each probed with raw Mach / IOSurface calls
 * and marked confirmed or refuted, with the facts it was judged on. Some
 * need a second process: doctor starts itself as a peer (`doctor --peer
 * SERVICE`), which looks the doctor's bootstrap name up and does what it is
 * told, one message at a time.
 *
 * Everything runs over a {@link DarwinNative} and a {@link PeerLauncher},
 * so the whole report also runs on Linux over the test double
 * (`tests/fakes/`), whose model of XNU, launchd and IOSurface is exactly
 * what these checks hold against a real Mac.
 *
 * @module
 */

import { loadShim, type ShimOrigin, shimOrigin } from "../ffi/darwin.ts";
import { runtime } from "../ffi/runtime.ts";
import {
  computeGeometry,
  fourccOf,
  PIXEL_FORMATS,
  type PixelFormat,
} from "../src/core/geometry.ts";
import { compareAbiReport } from "../src/darwin/abi.ts";
import { type DarwinNative, readShimReport, realDarwinNative } from "../src/darwin/native.ts";
import { DARWIN } from "../src/darwin/structs.ts";
import { alignedRequest } from "../src/darwin/surface.ts";
import { readLayout } from "../src/darwin/verify.ts";
import { probeHandoff } from "./doctor_handoff.ts";
import { type Check, errorText, probe } from "./doctor_report.ts";
import { childPeer, peerChecks } from "./doctor_darwin_peer.ts";
import {
  bootstrapRemovalCheck,
  portSetDestroyCheck,
  portSetPeekCheck,
  queueLimitChecks,
  queueLimitSetCheck,
  sendPossibleCheck,
} from "./doctor_darwin_ports.ts";
import { createSurface, delay, type PeerLauncher, type Sleep } from "./doctor_mach.ts";

// --- what needs no peer ----------------------------------------------------------------------

/** The shim that was loaded and its ABI report against `EXPECTED_ABI`. */
export function shimChecks(
  origin: ShimOrigin | undefined,
  report: Readonly<Record<string, unknown>>,
): Check[] {
  const shim: Check = origin
    ? {
      id: "macos.shim",
      status: "ok",
      detail: `${origin.source}: ${origin.path}, SHA-256 ${origin.sha256 ?? "not hashed"} (${
        origin.shipped ? "the shipped one" : "not the shipped one"
      })${origin.notes.length ? `; ${origin.notes.join("; ")}` : ""}`,
      facts: { ...origin },
    }
    : { id: "macos.shim", status: "not-run", detail: "no shim loaded (a test double)" };
  const differences = compareAbiReport(report);
  return [shim, {
    id: "macos.abi",
    status: differences.length ? "failed" : "ok",
    detail: differences.length
      ? `the shim's report differs from the tables: ${differences.join("; ")}`
      : `every size, offset and constant in the shim's report matches (${
        Object.keys(report).length
      } keys)`,
    facts: { differences },
  }];
}

/** `IOSurfaceAlignProperty` for every format, and the layout IOSurface makes of the aligned request. */
export function alignChecks(native: DarwinNative): Check[] {
  return PIXEL_FORMATS.map((format: PixelFormat) =>
    probe(`macos.align.${format}`, () => {
      const requested = computeGeometry(100, 50, format);
      const { planes: aligned, allocSize } = alignedRequest(native, requested);
      const surface = native.createIOSurface({
        width: requested.width,
        height: requested.height,
        pixelFormat: fourccOf(format),
        allocSize,
        planes: aligned,
      });
      if (surface === null) throw new Error(`IOSurfaceCreate refused 100x50 ${format}`);
      try {
        const layout = readLayout(native, surface);
        const asked = {
          bytesPerRow: aligned.map((p) => p.bytesPerRow),
          offsets: aligned.map((p) => p.offset),
          allocSize,
        };
        const got = {
          bytesPerRow: layout.planes.map((p) => p.bytesPerRow),
          offsets: layout.planes.map((p) => p.offset),
          allocSize: layout.allocSize,
        };
        const same = JSON.stringify(asked) === JSON.stringify(got);
        return {
          status: same ? "confirmed" : "refuted",
          detail: `100x50 ${format}: rows ${
            requested.planes.map((p, i) => `${p.bytesPerRow}->${asked.bytesPerRow[i]}`).join(",")
          }, alloc ${requested.allocSize}->${allocSize}; IOSurface ${
            same
              ? "made exactly that layout"
              : `made ${
                JSON.stringify(got)
              } (surfaceport reads it back, so this works; the test double assumes the aligned request)`
          }`,
          facts: { requested: requested.planes, asked, got },
        };
      } finally {
        native.CFRelease(surface);
      }
    })
  );
}

/** Whether `CVPixelBufferCreateWithIOSurface` holds a use of the surface while it lives. */
export function pixelBufferUseCheck(native: DarwinNative): Check {
  return probe("macos.cvpixelbuffer.use", () => {
    const surface = createSurface(native, 1);
    try {
      const before = native.IOSurfaceIsInUse(surface);
      const out = new Uint8Array(8);
      const kr = native.CVPixelBufferCreateWithIOSurface(surface, out);
      if (kr !== DARWIN.kCVReturnSuccess) {
        throw new Error(`CVPixelBufferCreateWithIOSurface: ${kr}`);
      }
      const pixelBuffer = runtime.pointerFrom(new DataView(out.buffer).getBigUint64(0, true));
      const during = native.IOSurfaceIsInUse(surface);
      if (pixelBuffer !== null) native.CFRelease(pixelBuffer);
      const after = native.IOSurfaceIsInUse(surface);
      const ok = !before && during && !after;
      return {
        status: ok ? "confirmed" : "refuted",
        detail:
          `in use before ${before}, with a CVPixelBuffer ${during}, after its release ${after} ` +
          "(the test double assumes a pixel buffer holds one use; surfaceport's PixelBuffer adds " +
          "its own IOSurfaceIncrementUseCount, so pools are safe either way)",
        facts: { before, during, after },
      };
    } finally {
      native.CFRelease(surface);
    }
  });
}

/** Every check that runs over `native` (everything but the shim's own). */
export async function darwinChecks(
  native: DarwinNative,
  launch: PeerLauncher,
  sleep: Sleep = delay,
): Promise<Check[]> {
  return [
    ...alignChecks(native),
    ...queueLimitChecks(native),
    queueLimitSetCheck(native),
    await sendPossibleCheck(native, sleep),
    await portSetPeekCheck(native),
    await portSetDestroyCheck(native, sleep),
    await bootstrapRemovalCheck(native, sleep),
    pixelBufferUseCheck(native),
    ...await peerChecks(native, launch, sleep),
  ];
}

/** The whole macOS report on this Mac: the shim first; nothing else runs if it cannot load. */
export async function darwinChecksOnThisMac(): Promise<Check[]> {
  let report: Record<string, unknown>;
  try {
    report = readShimReport(loadShim());
  } catch (error) {
    return [{ id: "macos.shim", status: "failed", detail: errorText(error) }];
  }
  const checks = shimChecks(shimOrigin(), report);
  if (checks.some((c) => c.status === "failed")) return checks;
  return [
    ...checks,
    await probeHandoff("macos.handoff"),
    ...await darwinChecks(realDarwinNative(), childPeer),
  ];
}
