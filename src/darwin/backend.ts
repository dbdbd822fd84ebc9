/**
 * The macOS backend: IOSurface surfaces, mach-port channels. It runs over a
 * {@link DarwinNative}: the real frameworks on macOS (loaded on first use),
 * or an in-memory test double on Linux (`tests/fakes/fake_darwin.ts`).
 *
 * @module
 */

import { loadFrameworks } from "../../ffi/darwin.ts";
import type { Backend, BackendConnection, EndpointState } from "../contract/backend.ts";
import { MachError } from "../core/errors.ts";
import { connectMach, MachListener } from "./listener.ts";
import { lookUp, serviceName } from "./bootstrap.ts";
import { machError } from "./mach.ts";
import { DARWIN } from "./structs.ts";
import type { PixelBuffer } from "./pixel_buffer.ts";
import { type DarwinNative, loadRealDarwinNative, realDarwinNative } from "./native.ts";
import { CreatedIOSurface, surfaceBackingOfPixelBuffer } from "./surface.ts";
import { runtime } from "../../ffi/runtime.ts";

/** The macOS backend over one task's native calls. */
export class DarwinBackend implements Backend {
  readonly #resolve: () => DarwinNative;
  readonly #resolveAsync: () => Promise<DarwinNative>;
  readonly #injected: DarwinNative | undefined;

  /**
   * `native` is either the calls themselves (tests) or nothing, for the real
   * frameworks loaded on first use.
   */
  constructor(native?: DarwinNative) {
    this.#injected = native;
    this.#resolve = native ? () => native : realDarwinNative;
    this.#resolveAsync = native ? () => Promise.resolve(native) : loadRealDarwinNative;
  }

  /** The native calls (loads the real ones on first use). */
  get darwinNative(): DarwinNative {
    return this.#resolve();
  }

  currentUid(): number {
    // Only libSystem: connect() resolves the default peer check before it may fetch the shim.
    return this.#injected ? this.#injected.geteuid() : loadFrameworks().libSystem.geteuid();
  }

  currentPid(): number {
    return this.#injected ? this.#injected.getpid() : runtime.pid;
  }

  allocateSurface: Backend["allocateSurface"] = (geometry) =>
    CreatedIOSurface.allocate(this.#resolve(), geometry);

  adoptPixelBuffer: NonNullable<Backend["adoptPixelBuffer"]> = (pixelBuffer) =>
    surfaceBackingOfPixelBuffer(pixelBuffer as PixelBuffer);

  listen: Backend["listen"] = (name, allowPeer, limits) =>
    new MachListener(this.#resolve(), name, allowPeer, limits);

  duplicateHandle(handle: number): number {
    // One more user reference to the same send right: MOVE_SEND of one leaves the other.
    const native = this.#resolve();
    const kr = native.mach_port_mod_refs(native.taskSelf, handle, DARWIN.MACH_PORT_RIGHT_SEND, 1);
    if (kr !== DARWIN.KERN_SUCCESS) {
      throw machError("mach_port_mod_refs(SEND, +1)", kr);
    }
    return handle;
  }

  releaseHandle(handle: number): void {
    const native = this.#resolve();
    native.mach_port_deallocate(native.taskSelf, handle);
  }

  nameAbsent(error: unknown): boolean {
    return error instanceof MachError &&
      (error.kernReturn === DARWIN.BOOTSTRAP_UNKNOWN_SERVICE ||
        error.kernReturn === DARWIN.MACH_SEND_INVALID_DEST);
  }

  endpointStates(
    endpoints: readonly { name: string; pid: number; address: string }[],
  ): EndpointState[] {
    const native = this.#resolve();
    return endpoints.map(({ name, pid, address }) => {
      const service = serviceName(name);
      if (address !== service) return "dead"; // not the address its name binds: no endpoint
      // kill(pid, 0) only for a real pid: 0 would probe our process group, -1 every process.
      if (!(pid > 0 && pid <= 0x7fffffff)) return "dead";
      const probe = native.probeProcess(pid);
      // No such process: its names died with it, whoever holds the name now.
      if (probe === DARWIN.ESRCH) return "dead";
      // EPERM: the process exists but refuses our signals. The entry was written into this
      // user's own 0700 directory, so that is a sandboxed lister (the sandbox refuses the
      // signal) or a pid reused by another user: alive for this check, judged by its name, and
      // never deleted on its pid. Any other answer: not ours to judge.
      if (probe !== 0 && probe !== DARWIN.EPERM) return "unknown";
      // A bootstrap name dies with the receive right of the task that checked it in. A name that
      // does not resolve while its process lives may be live in another bootstrap namespace (an
      // ssh session looking at the GUI login's names): not ours to judge, so neither listed nor
      // deleted.
      try {
        lookUp(native, service).close();
        return "live";
      } catch {
        return "unknown";
      }
    });
  }

  async connect(
    ...[name, allowPeer, limits, deadline, signal]: Parameters<Backend["connect"]>
  ): Promise<BackendConnection> {
    const native = await this.#resolveAsync();
    return connectMach(native, name, allowPeer, limits, deadline, signal);
  }
}

/** IOSurface + mach ports through the real macOS frameworks (loaded lazily, macOS only). */
export const darwinBackend: DarwinBackend = new DarwinBackend();

/** Creates a backend over `native` (a test double, or another task's calls in tests). */
export function createDarwinBackend(native: DarwinNative): DarwinBackend {
  return new DarwinBackend(native);
}

/**
 * On macOS, loads the native libraries now (libSystem, CoreFoundation,
 * IOSurface, CoreVideo and the surfaceport shim, whose ABI report must match)
 * instead of on first use, so that a missing permission or a refused shim
 * shows up here rather than in the first `Surface.create` or `listen`.
 * Optional: every entry point loads them itself, synchronously. The shim
 * is the one in `SURFACEPORT_SHIM_PATH`, `native/build/` of a checkout, or
 * the one shipped in the package (SHA-256 checked; from JSR or a
 * `deno compile` binary it is written to a private temporary file first,
 * which needs `--allow-write`). Nothing is fetched. Resolves at once on
 * other platforms.
 */
export async function prepareNative(): Promise<void> {
  if (runtime.os === "darwin") await loadRealDarwinNative();
}
