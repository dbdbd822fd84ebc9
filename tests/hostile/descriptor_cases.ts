/**
 * Malformed messages, part one: descriptors that are not surface memory
 * (pipes, sockets, files, O_PATH, /proc/self/mem, ...) and memfds that are
 * not safe to map (unsealed, write-sealed, read-only, huge pages, of the
 * wrong size). Run by `tests/hostile_messages_test.ts`.
 *
 * @module
 */

import { computeGeometry } from "../../src/core/geometry.ts";
import { LINUX } from "../../src/linux/structs.ts";
import { type AttackCase, sealed, SIZE, validMessage, withFds } from "./attacks.ts";
import { GOOD_FRAME } from "./checks.ts";
import {
  closeAll,
  makeMemfd,
  makePipe,
  makeSocket,
  MFD_HUGETLB,
  O_PATH,
  openPath,
  reopenAs,
  surfaceMessage,
} from "./raw.ts";

const linux = Deno.build.os === "linux";

const tempFile = await Deno.makeTempFile({ prefix: "surfaceport-hostile-" });
await Deno.truncate(tempFile, SIZE);
// A named tmpfs file; falls back to the temp dir where there is no /dev/shm (then it is not tmpfs).
const shmFile = await Deno.makeTempFile({
  dir: linux && (await Deno.stat("/dev/shm").catch(() => undefined))?.isDirectory
    ? "/dev/shm"
    : undefined,
  prefix: "surfaceport-hostile-",
});
await Deno.truncate(shmFile, SIZE);
// Removed when this module's run ends, whichever test fails or is filtered out.
globalThis.addEventListener("unload", () => {
  for (const path of [tempFile, shmFile]) Deno.removeSync(path);
});

/** A 2 MiB geometry: one huge page. */
const HUGE = computeGeometry(512, 1024, "BGRA");
/** Whether this kernel makes huge-page memfds (the case needs one, not a huge page pool). */
const hugePagesWork = linux && (() => {
  try {
    closeAll(makeMemfd(HUGE.allocSize, { flags: LINUX.MFD_ALLOW_SEALING | MFD_HUGETLB }));
    return true;
  } catch {
    console.warn(
      "hostile_messages_test.ts: this kernel makes no MFD_HUGETLB memfds: HUGE_PAGES untested",
    );
    return false;
  }
})();

/** Descriptors that are not surface memory, then memfds that are not safe to map. */
export const DESCRIPTOR_CASES: AttackCase[] = [
  // --- descriptors that are not surface memory ---
  {
    name: "a pipe instead of a memfd",
    send: withFds(
      () => makePipe(),
      (raw, [read]) => raw.sendOrThrow(validMessage(), { fds: [read] }),
    ),
    expect: ["protocol:NOT_SHARED_MEMORY"],
  },
  {
    name: "a socket instead of a memfd",
    send: withFds(() => [makeSocket()], (raw, fds) => raw.sendOrThrow(validMessage(), { fds })),
    expect: ["protocol:NOT_SHARED_MEMORY"],
  },
  {
    name: "/dev/zero instead of a memfd",
    send: withFds(
      () => [openPath("/dev/zero")],
      (raw, fds) => raw.sendOrThrow(validMessage(), { fds }),
    ),
    expect: ["protocol:NOT_SHARED_MEMORY"],
  },
  {
    name: "a regular file of the right size",
    send: withFds(
      () => [openPath(tempFile)],
      (raw, fds) => raw.sendOrThrow(validMessage(), { fds }),
    ),
    expect: ["protocol:NOT_SHARED_MEMORY"],
  },
  {
    name: "a /dev/shm file of the right size (tmpfs, but not a memfd: it can never be sealed)",
    send: withFds(
      () => [openPath(shmFile)],
      (raw, fds) => raw.sendOrThrow(validMessage(), { fds }),
    ),
    expect: ["protocol:NOT_SHARED_MEMORY"],
  },
  {
    name: "an O_PATH descriptor of a regular file of the right size",
    send: withFds(
      () => [openPath(tempFile, O_PATH)],
      (raw, fds) => raw.sendOrThrow(validMessage(), { fds }),
    ),
    expect: ["protocol:NOT_SHARED_MEMORY"],
  },
  {
    name: "an O_PATH descriptor of a sealed memfd (reopening it would grant what it does not)",
    send: withFds(() => {
      const memfd = makeMemfd(SIZE);
      try {
        return [reopenAs(memfd, O_PATH)];
      } finally {
        closeAll(memfd);
      }
    }, (raw, fds) => raw.sendOrThrow(validMessage(), { fds })),
    expect: ["protocol:NOT_SHARED_MEMORY"],
  },
  {
    name: "/proc/self/mem",
    send: withFds(
      () => [openPath("/proc/self/mem")],
      (raw, fds) => raw.sendOrThrow(validMessage(), { fds }),
    ),
    expect: ["protocol:NOT_SHARED_MEMORY"],
  },
  {
    name: "a directory",
    send: withFds(
      () => [openPath("/tmp", LINUX.O_RDONLY)],
      (raw, fds) => raw.sendOrThrow(validMessage(), { fds }),
    ),
    expect: ["protocol:NOT_SHARED_MEMORY"],
  },
  // --- memfds that are not safe to map ---
  {
    name: "an unsealed memfd (the sender could shrink it under our mapping: SIGBUS)",
    send: withFds(
      () => [makeMemfd(SIZE, { seals: 0 })],
      (raw, fds) => raw.sendOrThrow(validMessage(), { fds }),
    ),
    expect: ["protocol:UNSEALED"],
  },
  {
    name: "a memfd sealed against shrinking only",
    send: withFds(
      () => [makeMemfd(SIZE, { seals: LINUX.F_SEAL_SHRINK })],
      (raw, fds) => raw.sendOrThrow(validMessage(), { fds }),
    ),
    expect: ["protocol:UNSEALED"],
  },
  {
    name: "a memfd created without MFD_ALLOW_SEALING (it can never be sealed)",
    send: withFds(
      () => [makeMemfd(SIZE, { flags: 0, seals: 0 })],
      (raw, fds) => raw.sendOrThrow(validMessage(), { fds }),
    ),
    expect: ["protocol:UNSEALED"],
  },
  {
    name: "a write-sealed memfd",
    send: withFds(
      () => [
        makeMemfd(SIZE, { seals: LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW | LINUX.F_SEAL_WRITE }),
      ],
      (raw, fds) => raw.sendOrThrow(validMessage(), { fds }),
    ),
    expect: ["protocol:WRITE_SEALED"],
  },
  {
    name: "a memfd sealed with F_SEAL_FUTURE_WRITE (counts as write-sealed)",
    send: withFds(
      () => [
        makeMemfd(SIZE, {
          seals: LINUX.F_SEAL_SHRINK | LINUX.F_SEAL_GROW | LINUX.F_SEAL_FUTURE_WRITE,
        }),
      ],
      (raw, fds) => raw.sendOrThrow(validMessage(), { fds }),
    ),
    expect: ["protocol:WRITE_SEALED"],
  },
  {
    name: "an O_RDONLY descriptor of a sealed memfd (never widened to read-write)",
    send: withFds(() => {
      const memfd = makeMemfd(SIZE);
      try {
        return [reopenAs(memfd, LINUX.O_RDONLY)];
      } finally {
        closeAll(memfd);
      }
    }, (raw, fds) => raw.sendOrThrow(validMessage(), { fds })),
    expect: ["protocol:BAD_ACCESS"],
  },
  {
    name: "an O_WRONLY descriptor of a sealed memfd",
    send: withFds(() => {
      const memfd = makeMemfd(SIZE);
      try {
        return [reopenAs(memfd, 1 /* O_WRONLY */)];
      } finally {
        closeAll(memfd);
      }
    }, (raw, fds) => raw.sendOrThrow(validMessage(), { fds })),
    expect: ["protocol:BAD_ACCESS"],
  },
  {
    name: "a surface sent read-write, then again O_RDONLY (the cached inode is checked again)",
    send: withFds(() => [makeMemfd(SIZE)], async (raw, [memfd]) => {
      raw.sendOrThrow(validMessage(), { fds: [memfd] });
      const readOnly = reopenAs(memfd, LINUX.O_RDONLY);
      try {
        await raw.sendWaiting(validMessage(), { fds: [readOnly] });
      } finally {
        closeAll(readOnly);
      }
    }),
    expect: [GOOD_FRAME, "protocol:BAD_ACCESS"],
  },
  {
    name: "a surface sent again with a header claiming another size (cached inode)",
    send: withFds(() => [makeMemfd(SIZE)], async (raw, [memfd]) => {
      raw.sendOrThrow(validMessage(), { fds: [memfd] });
      await raw.sendWaiting(surfaceMessage(computeGeometry(64, 64, "BGRA")), { fds: [memfd] });
    }),
    expect: [GOOD_FRAME, "protocol:SIZE_MISMATCH"],
  },
  ...(hugePagesWork
    ? [{
      name: "a huge-page memfd (MFD_HUGETLB: mmap fails with ENOMEM when the pool is empty)",
      send: withFds(() => [
        makeMemfd(HUGE.allocSize, {
          flags: LINUX.MFD_ALLOW_SEALING | MFD_HUGETLB,
        }),
      ], (raw, fds) => raw.sendOrThrow(surfaceMessage(HUGE), { fds })),
      expect: ["protocol:HUGE_PAGES"],
    }]
    : []),
  {
    name: "a memfd one page smaller than the header says",
    send: withFds(sealed(SIZE - 4096), (raw, fds) => raw.sendOrThrow(validMessage(), { fds })),
    expect: ["protocol:SIZE_MISMATCH"],
  },
  {
    name: "a memfd one page larger than the header says",
    send: withFds(sealed(SIZE + 4096), (raw, fds) => raw.sendOrThrow(validMessage(), { fds })),
    expect: ["protocol:SIZE_MISMATCH"],
  },
  {
    name: "an empty memfd",
    send: withFds(sealed(0), (raw, fds) => raw.sendOrThrow(validMessage(), { fds })),
    expect: ["protocol:SIZE_MISMATCH"],
  },
  {
    name: "a 1 GiB geometry with an 8 KiB memfd (never mapped)",
    send: withFds(
      sealed(),
      (raw, fds) => raw.sendOrThrow(surfaceMessage(computeGeometry(16384, 16384, "BGRA")), { fds }),
    ),
    expect: ["protocol:SIZE_MISMATCH"],
  },
];
