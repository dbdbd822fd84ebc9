/**
 * Linux only: the from-gst bridge's (`from_gst.ts`) GStreamer buffers made
 * surfaces. A buffer of one memory has its memfd checked, sealed and
 * adopted as it is (no copy: GStreamer's own strides and offsets go
 * through); one whose planes lie in several memories is copied once into
 * a pooled surface and given back to GStreamer at once. Either is checked
 * against the caps it came under and against what the bridge holds.
 *
 * @module
 */

import { ProtocolError, UnsupportedError } from "../core/errors.ts";
import { closeQuietly, fstatxNumbers, libc } from "../linux/libc.ts";
import { LINUX } from "../linux/structs.ts";
import type { Surface } from "../surface/surface.ts";
import { foreignCacheSize, ForeignMemfdAdopter, sealForSharing } from "./adopt.ts";
import { type GstVideoCaps, parseVideoCaps } from "./caps.ts";
import { GstBufferCopier } from "./copy.ts";
import type { FromGstCounts } from "./from_gst_options.ts";
import { GeometryCache } from "./geometry_cache.ts";
import type { HeldBuffers } from "./held_buffers.ts";
import { type GstNewBuffer, GstProtocolError } from "./protocol.ts";

/** Surfaces of one from-gst bridge's buffers, under the caps the sink sent last. */
export class BufferSurfaces {
  /** The buffers the bridge holds (a buffer under a held id, or one past the limit, is refused). */
  readonly #held: HeldBuffers;
  /** The bridge's counters (copies and dropped are counted here). */
  readonly #stats: FromGstCounts;
  /** Made at the first buffer, sized from its memfd (see `foreignCacheSize`). */
  #adopter: ForeignMemfdAdopter | undefined;
  readonly #copier: GstBufferCopier;
  readonly #geometries = new GeometryCache();
  #caps: GstVideoCaps | undefined;
  #capsError: Error | undefined;

  /** `copies`: how many pooled surfaces copies of several memories take turns in. */
  constructor(held: HeldBuffers, stats: FromGstCounts, copies: number) {
    this.#held = held;
    this.#stats = stats;
    this.#copier = new GstBufferCopier(copies);
  }

  /** The current caps, parsed (undefined before the first CAPS message, or if unusable). */
  get caps(): GstVideoCaps | undefined {
    return this.#caps;
  }

  /**
   * The sink sent CAPS. A client that connects before negotiation gets
   * "NULL"; unusable caps only matter once a buffer comes under them.
   */
  setCaps(caps: string): void {
    this.#caps = undefined;
    this.#capsError = undefined;
    try {
      this.#caps = parseVideoCaps(caps);
    } catch (error) {
      this.#capsError = error as Error;
    }
  }

  /** Adopts a buffer's memfd as a surface, or gives the buffer back (returns undefined). Owns `fds`. */
  adopt(buffer: GstNewBuffer, fds: number[]): Surface | undefined {
    let adopted = false;
    try {
      if (!this.#caps) {
        throw this.#capsError ?? new GstProtocolError("BAD_CAPS", "NEW_BUFFER before any CAPS");
      }
      if (buffer.memoryType !== "memfd" || buffer.memories.length === 0) {
        throw new UnsupportedError(
          `from-gst: a buffer of ${buffer.memories.length} ${buffer.memoryType} memories; ` +
            "the bridge takes fd memory (GStreamer's shm allocator), not DMABuf",
        );
      }
      if (this.#held.holds(buffer)) {
        // Never answered with RELEASE: GStreamer would take it for the held buffer's release
        // and reuse memory a consumer still reads.
        throw new GstProtocolError(
          "DUPLICATE_ID",
          `NEW_BUFFER with id ${buffer.id}, which the bridge still holds`,
        );
      }
      if (this.#held.full) {
        this.#stats.dropped++;
        this.#held.release(buffer);
        return undefined;
      }
      const fd = fds[0];
      // Only memfds answer F_GET_SEALS: a pipe, socket or file is NOT_SHARED_MEMORY (as
      // docs/errors.md says), not a size that does not fit.
      if (libc().fcntl(fd, LINUX.F_GET_SEALS, 0) < 0) {
        throw new ProtocolError("NOT_SHARED_MEMORY", "memory 0 is not a memfd");
      }
      sealForSharing(fd); // first: with shrink and grow sealed, the size read next is final
      const fileSize = fstatxNumbers(fd).size;
      const memory = buffer.memories[0];
      const geometry = this.#geometries.get(
        this.#caps,
        buffer.videoMeta,
        memory.offset,
        memory.size,
        fileSize,
      );
      this.#held.watch(fd);
      this.#adopter ??= new ForeignMemfdAdopter(foreignCacheSize(fileSize));
      const surface = this.#adopter.adoptHeld(fd, geometry);
      adopted = true;
      return surface;
    } finally {
      if (!adopted) { for (const fd of fds) closeQuietly(fd); }
    }
  }

  /**
   * Copies a buffer of several memories into a surface of surfaceport's own
   * layout (`src/gst/copy.ts`), closes the descriptors and gives the buffer
   * back to GStreamer at once. Returns undefined (the frame dropped) when
   * every pooled surface is still held by subscribers.
   */
  async copy(buffer: GstNewBuffer, fds: number[]): Promise<Surface | undefined> {
    try {
      const caps = this.#caps;
      if (!caps) {
        throw this.#capsError ?? new GstProtocolError("BAD_CAPS", "NEW_BUFFER before any CAPS");
      }
      if (buffer.memoryType !== "memfd") {
        throw new UnsupportedError("from-gst: DMABuf memory is not supported; use system memory");
      }
      const surface = await this.#copier.copy(caps, buffer, fds);
      if (surface) this.#stats.copies++;
      else this.#stats.dropped++;
      return surface;
    } finally {
      for (const fd of fds) closeQuietly(fd);
      this.#held.release(buffer);
    }
  }

  /** Closes the adopted memfds' mappings and the copies' pool. */
  close(): void {
    this.#adopter?.close();
    this.#copier.close();
  }
}
