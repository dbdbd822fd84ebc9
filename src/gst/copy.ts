/**
 * Linux only: from-gst's copy path, for a GStreamer buffer whose planes lie
 * in several memories (one surface cannot adopt them): each plane is read
 * with `pread` into a surface of surfaceport's own layout from a pool the
 * copier keeps. Everything the sink claims (the GstVideoMeta's strides and
 * offsets, the memories' sizes) is planned and checked against the real
 * files before anything is allocated or read (`planCopy`), and reads are
 * bounded whatever the stride.
 *
 * @module
 */

import { PoolExhaustedError, ProtocolError } from "../core/errors.ts";
import { fstatx, libc } from "../linux/libc.ts";
import { LINUX } from "../linux/structs.ts";
import { SurfacePool } from "../surface/pool.ts";
import type { Surface } from "../surface/surface.ts";
import { type GstVideoCaps, planCopy, type PlaneCopy } from "./caps.ts";
import { type GstNewBuffer, GstProtocolError } from "./protocol.ts";

/** Copies multi-memory buffers into pooled surfaces (one owner of the pool and the scratch). */
export class GstBufferCopier {
  readonly #maxSurfaces: number;
  #pool: SurfacePool | undefined;
  #poolKey = "";
  #scratch = new Uint8Array(0);

  /** A copier whose pool (one per caps, replaced when they change) has `maxSurfaces` surfaces. */
  constructor(maxSurfaces: number) {
    this.#maxSurfaces = maxSurfaces;
  }

  /**
   * A surface holding `buffer` (memories `fds`, in order) under `caps`, or
   * undefined when every pooled surface is still held (the frame is then
   * dropped). The descriptors stay the caller's. Throws
   * {@link GstProtocolError} `BAD_META` for a plan or a read that does not
   * fit, `ProtocolError` `NOT_SHARED_MEMORY` for a memory that is no memfd.
   */
  async copy(
    caps: GstVideoCaps,
    buffer: GstNewBuffer,
    fds: number[],
  ): Promise<Surface | undefined> {
    // Checked before anything is allocated: the meta's strides and offsets are the sink's word.
    const plan = planCopy(caps, buffer.videoMeta, buffer.memories);
    for (const plane of plan) checkFile(fds[plane.memory], plane);
    let surface: Surface | undefined;
    try {
      surface = await this.#poolFor(caps).acquire({ timeout: 100 });
    } catch (error) {
      if (error instanceof PoolExhaustedError) return undefined;
      throw error;
    }
    try {
      for (let p = 0; p < plan.length; p++) {
        this.#copyPlane(fds[plan[p].memory], plan[p], surface, p);
      }
      const copied = surface;
      surface = undefined;
      return copied;
    } finally {
      surface?.close();
    }
  }

  /**
   * Copies plane `p` from `fd` into `surface`, `plane.rowsPerRead` rows per
   * `pread` into a scratch buffer of at most `COPY_READ_MAX` (16 MiB) (or
   * one row). A memory that shrank meanwhile gives a short read: an error,
   * never `SIGBUS`.
   */
  #copyPlane(fd: number, plane: PlaneCopy, surface: Surface, p: number): void {
    const { stride, row, rowsPerRead } = plane;
    const chunk = stride * (rowsPerRead - 1) + row;
    if (this.#scratch.length < chunk) this.#scratch = new Uint8Array(chunk);
    const to = surface.bytes(p);
    const toStride = surface.planes[p].bytesPerRow;
    for (let y = 0; y < plane.height; y += rowsPerRead) {
      const rows = Math.min(rowsPerRead, plane.height - y);
      const length = stride * (rows - 1) + row;
      const at = plane.fileOffset + y * stride;
      const got = Number(libc().pread(fd, this.#scratch, BigInt(length), BigInt(at)));
      if (got !== length) {
        throw new GstProtocolError(
          "BAD_META",
          `memory ${plane.memory}: read ${got} of ${length} bytes at ${at}`,
        );
      }
      for (let r = 0; r < rows; r++) {
        to.set(this.#scratch.subarray(r * stride, r * stride + row), (y + r) * toStride);
      }
    }
  }

  #poolFor(caps: GstVideoCaps): SurfacePool {
    const key = `${caps.format} ${caps.width}x${caps.height}`;
    if (this.#pool && this.#poolKey === key) return this.#pool;
    this.#pool?.close();
    this.#poolKey = key;
    this.#pool = new SurfacePool({
      width: caps.width,
      height: caps.height,
      format: caps.format,
      maxSurfaces: this.#maxSurfaces,
    });
    return this.#pool;
  }

  /** Closes the pool (surfaces consumers still hold stay theirs). Idempotent. */
  close(): void {
    this.#pool?.close();
    this.#pool = undefined;
    this.#scratch = new Uint8Array(0);
  }
}

/**
 * Checks, before anything is read, that the memory of `plane` is shared
 * memory (only memfds answer `F_GET_SEALS`: a read never blocks on one,
 * while a FIFO or a file on a hung filesystem could stall the event loop)
 * and that its file holds the whole plane.
 */
function checkFile(fd: number, plane: PlaneCopy): void {
  if (libc().fcntl(fd, LINUX.F_GET_SEALS, 0) < 0) {
    throw new ProtocolError("NOT_SHARED_MEMORY", `memory ${plane.memory} is not a memfd`);
  }
  const fileSize = Number(fstatx(fd).size);
  if (plane.fileOffset + plane.span > fileSize) {
    throw new GstProtocolError(
      "BAD_META",
      `memory ${plane.memory}: a plane needs bytes ${plane.fileOffset}-${
        plane.fileOffset + plane.span
      } of a ${fileSize}-byte file`,
    );
  }
}
