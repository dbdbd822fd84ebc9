/**
 * Malformed messages, part two: dimensions that overflow, wrong numbers of
 * descriptors and odd control data, and bytes that are not a surfaceport
 * message. Run by `tests/hostile_messages_test.ts`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { computeGeometry } from "../../src/core/geometry.ts";
import { cmsgLen, cmsgSpace, LINUX } from "../../src/linux/structs.ts";
import { HEADER_SIZE, META_JSON } from "../../src/wire/wire.ts";
import { type AttackCase, sealed, SIZE, validMessage, withFds } from "./attacks.ts";
import { closeAll, makeMemfd, smallGeometry, surfaceMessage } from "./raw.ts";

/** The header of a valid 64x32 BGRA message with `mutate` applied to it. */
function header(mutate: (view: DataView) => void, geometry = smallGeometry()): Uint8Array {
  const message = surfaceMessage(geometry);
  mutate(new DataView(message.buffer));
  return message;
}

function deterministicGarbage(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let x = seed;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
  return bytes;
}

/** Dimensions that overflow, wrong descriptor counts and control data, bytes that are not ours. */
export const MESSAGE_CASES: AttackCase[] = [
  // --- dimensions that overflow ---
  {
    name: "width 2^32-1",
    send: withFds(
      sealed(),
      (raw, fds) => raw.sendOrThrow(header((v) => v.setUint32(16, 0xffffffff, true)), { fds }),
    ),
    expect: ["protocol:BAD_GEOMETRY"],
  },
  {
    name: "a 32768x32768 BGRA surface (4 GiB, over the limit)",
    send: withFds(
      sealed(),
      (raw, fds) =>
        raw.sendOrThrow(surfaceMessage(computeGeometry(32768, 32768, "BGRA", 2 ** 40)), { fds }),
    ),
    expect: ["protocol:TOO_LARGE"],
  },
  {
    name: "allocSize 2^64-1",
    send: withFds(
      sealed(),
      (raw, fds) =>
        raw.sendOrThrow(header((v) => v.setBigUint64(48, 0xffffffffffffffffn, true)), { fds }),
    ),
    expect: ["protocol:TOO_LARGE"],
  },
  {
    name: "a plane offset of 2^63",
    send: withFds(
      sealed(),
      (raw, fds) => raw.sendOrThrow(header((v) => v.setBigUint64(64, 1n << 63n, true)), { fds }),
    ),
    expect: ["protocol:BAD_GEOMETRY"],
  },
  {
    name: "bytesPerRow 2^32-1 (rows overrun the memory)",
    send: withFds(
      sealed(),
      (raw, fds) => raw.sendOrThrow(header((v) => v.setUint32(72, 0xffffffff, true)), { fds }),
    ),
    expect: ["protocol:BAD_GEOMETRY"],
  },
  // --- wrong numbers of descriptors, odd control data ---
  {
    name: "no fd",
    send: (raw) => raw.sendOrThrow(validMessage()),
    expect: ["protocol:NO_HANDLE"],
  },
  {
    name: "two fds",
    send: withFds(
      () => [makeMemfd(SIZE), makeMemfd(SIZE)],
      (raw, fds) => raw.sendOrThrow(validMessage(), { fds }),
    ),
    expect: ["protocol:EXTRA_HANDLES"],
  },
  {
    name: "eight fds (as many as the receive buffer holds)",
    send: withFds(
      () => Array.from({ length: 8 }, () => makeMemfd(SIZE)),
      (raw, fds) => raw.sendOrThrow(validMessage(), { fds }),
    ),
    expect: ["protocol:EXTRA_HANDLES"],
  },
  {
    name: "nine fds (control data truncated: MSG_CTRUNC)",
    send: withFds(
      () => Array.from({ length: 9 }, () => makeMemfd(SIZE)),
      (raw, fds) => raw.sendOrThrow(validMessage(), { fds }),
    ),
    expect: ["protocol:CONTROL_TRUNCATED"],
  },
  {
    name: "253 fds (the kernel's maximum)",
    send: withFds(
      () => Array.from({ length: 253 }, () => makeMemfd(4096)),
      (raw, fds) => raw.sendOrThrow(validMessage(), { fds }),
    ),
    expect: ["protocol:CONTROL_TRUNCATED"],
  },
  {
    name: "two SCM_RIGHTS control messages of one fd each",
    send: withFds(() => [makeMemfd(SIZE), makeMemfd(SIZE)], (raw, fds) => {
      const control = new Uint8Array(2 * cmsgSpace(4));
      const view = new DataView(control.buffer);
      fds.forEach((fd, i) => {
        const at = i * cmsgSpace(4);
        view.setBigUint64(at, BigInt(cmsgLen(4)), true);
        view.setInt32(at + 8, LINUX.SOL_SOCKET, true);
        view.setInt32(at + 12, LINUX.SCM_RIGHTS, true);
        view.setInt32(at + 16, fd, true);
      });
      raw.sendOrThrow(validMessage(), { control });
    }),
    expect: ["protocol:EXTRA_HANDLES"],
  },
  {
    name: "SCM_CREDENTIALS instead of an fd",
    send: (raw) => {
      const control = new Uint8Array(cmsgSpace(12));
      const view = new DataView(control.buffer);
      view.setBigUint64(0, BigInt(cmsgLen(12)), true);
      view.setInt32(8, LINUX.SOL_SOCKET, true);
      view.setInt32(12, 2, /* SCM_CREDENTIALS */ true);
      view.setInt32(16, Deno.pid, true);
      raw.sendOrThrow(validMessage(), { control });
    },
    expect: ["protocol:NO_HANDLE"],
  },
  {
    name: "control data whose cmsg_len overruns msg_controllen (refused by the kernel at send)",
    send: withFds(sealed(), (raw, [fd]) => {
      const control = new Uint8Array(24);
      const view = new DataView(control.buffer);
      view.setBigUint64(0, 64n, true);
      view.setInt32(8, LINUX.SOL_SOCKET, true);
      view.setInt32(12, LINUX.SCM_RIGHTS, true);
      view.setInt32(16, fd, true);
      assert.equal(raw.send(validMessage(), { control }), 22 /* EINVAL */);
    }),
    expect: [],
  },
  // --- bytes that are not a surfaceport message ---
  {
    name: "garbage bytes",
    send: (raw) => raw.sendOrThrow(deterministicGarbage(1000, 12345)),
    expect: ["protocol:BAD_MAGIC"],
  },
  {
    name: "garbage bytes with a valid memfd",
    send: withFds(
      sealed(),
      (raw, fds) => raw.sendOrThrow(deterministicGarbage(HEADER_SIZE, 777), { fds }),
    ),
    expect: ["protocol:BAD_MAGIC"],
  },
  {
    name: "an unknown protocol version",
    send: withFds(
      sealed(),
      (raw, fds) => raw.sendOrThrow(header((v) => v.setUint16(4, 2, true)), { fds }),
    ),
    expect: ["protocol:BAD_VERSION"],
  },
  {
    name: "an unknown message type",
    send: withFds(
      sealed(),
      (raw, fds) => raw.sendOrThrow(header((v) => v.setUint16(6, 77, true)), { fds }),
    ),
    expect: ["protocol:BAD_TYPE"],
  },
  {
    name: "a header cut at 60 bytes",
    send: withFds(sealed(), (raw, fds) => raw.sendOrThrow(validMessage().subarray(0, 60), { fds })),
    expect: ["protocol:SHORT_MESSAGE"],
  },
  {
    name: "a header cut at 9 bytes",
    send: withFds(sealed(), (raw, fds) => raw.sendOrThrow(validMessage().subarray(0, 9), { fds })),
    expect: ["protocol:SHORT_MESSAGE"],
  },
  {
    name: "an empty message with an fd",
    send: withFds(sealed(), (raw, fds) => raw.sendOrThrow(new Uint8Array(0), { fds })),
    expect: ["protocol:SHORT_MESSAGE"],
  },
  {
    name: "an empty message (the peer stays connected)",
    send: (raw) => raw.sendOrThrow(new Uint8Array(0)),
    expect: ["protocol:SHORT_MESSAGE"],
  },
  {
    name: "a 100 KiB message with an fd (MSG_TRUNC)",
    send: withFds(sealed(), (raw, fds) => raw.sendOrThrow(new Uint8Array(100 * 1024), { fds })),
    expect: ["protocol:MESSAGE_TRUNCATED"],
  },
  {
    name: "a header announcing 1 MiB of metadata",
    send: withFds(
      sealed(),
      (raw, fds) => raw.sendOrThrow(header((v) => v.setUint32(28, 1 << 20, true)), { fds }),
    ),
    expect: ["protocol:TOO_LARGE"],
  },
  {
    name: "metadata that is not UTF-8 JSON (rejected after the fd was imported)",
    send: withFds(sealed(), (raw, fds) =>
      raw.sendOrThrow(
        surfaceMessage(smallGeometry(), {
          metaKind: META_JSON,
          meta: new Uint8Array([0xff, 0xfe, 0x7b]),
        }),
        { fds },
      )),
    expect: ["protocol:BAD_META"],
  },
  {
    name: "500 bad messages in a row, each with a memfd",
    send: async (raw) => {
      for (let i = 0; i < 500; i++) {
        const fd = makeMemfd(SIZE);
        try {
          await raw.sendWaiting(deterministicGarbage(64, i + 1), { fds: [fd] });
        } finally {
          closeAll(fd);
        }
      }
    },
    expect: Array(500).fill("protocol:BAD_MAGIC"),
  },
];
