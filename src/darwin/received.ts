/**
 * Received surface memory on macOS: the IOSurface a peer's send right names,
 * looked up with `IOSurfaceLookupFromMachPort` and checked (`verify.ts`)
 * against the header's geometry; the right is kept as long as the frame is
 * open, so the sender's surface counts as in use until then.
 *
 * @module
 */

import { ProtocolError } from "../core/errors.ts";
import type { SurfaceGeometry } from "../core/geometry.ts";
import type { MachPort } from "./mach.ts";
import type { DarwinNative } from "./native.ts";
import { IOSurfaceHolder } from "./surface.ts";
import { layoutMismatch, readLayout } from "./verify.ts";
import type { Pointer } from "../../ffi/runtime.ts";

/**
 * A received surface: the looked-up `IOSurfaceRef` and the send right that
 * came with it. The right is what keeps the sender's surface in use; it is
 * deallocated when the frame closes.
 */
export class ReceivedIOSurface extends IOSurfaceHolder {
  #port: MachPort;

  private constructor(
    native: DarwinNative,
    surface: Pointer,
    geometry: SurfaceGeometry,
    port: MachPort,
  ) {
    super(native, surface, geometry);
    this.#port = port;
  }

  /**
   * Looks up the surface behind `port` and checks it against the header's
   * `geometry`. Takes ownership of `port` on success; on error the caller
   * still owns it.
   */
  static import(
    native: DarwinNative,
    port: MachPort,
    geometry: SurfaceGeometry,
  ): ReceivedIOSurface {
    const surface = native.IOSurfaceLookupFromMachPort(port.name);
    if (surface === null) {
      throw new ProtocolError("NOT_SHARED_MEMORY", "the received port is not an IOSurface port");
    }
    try {
      const problem = layoutMismatch(readLayout(native, surface), geometry);
      if (problem) {
        throw new ProtocolError("SIZE_MISMATCH", `the received IOSurface is ${problem}`);
      }
      return new ReceivedIOSurface(native, surface, geometry, port);
    } catch (error) {
      native.CFRelease(surface);
      throw error;
    }
  }

  protected override releaseExtra(): void {
    this.#port.close();
  }
}
