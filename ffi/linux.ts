/**
 * The libc symbol table for the Linux backend, and its loader. This and
 * `ffi/darwin.ts` are the only files that open native libraries (through
 * the runtime seam, `ffi/runtime.ts`).
 *
 * Types: `int`/`unsigned` are 32-bit and `long`/`size_t`/`ssize_t`/`off_t`
 * 64-bit on the LP64 targets surfaceport supports (x86_64, aarch64).
 * Variadic functions (`fcntl`, `open`) are declared with their fixed
 * argument list; on both targets a variadic integer or pointer argument is
 * passed exactly like a fixed one.
 *
 * @module
 */

import { LibraryLoadError, UnsupportedError } from "../src/core/errors.ts";
import { type Library, runtime } from "./runtime.ts";

/** libc, as surfaceport calls it. */
export const libcSymbols = {
  /** int memfd_create(const char *name, unsigned int flags) */
  memfd_create: { parameters: ["buffer", "u32"], result: "i32" },
  /** int ftruncate(int fd, off_t length) */
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  /** int fcntl(int fd, int cmd, int arg) — F_ADD_SEALS, F_GET_SEALS, F_GETFD */
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** int fcntl(int fd, int cmd, struct flock *lock) — F_OFD_SETLK, F_OFD_GETLK */
  fcntl_lock: { name: "fcntl", parameters: ["i32", "i32", "buffer"], result: "i32" },
  /** int open(const char *path, int flags, mode_t mode) */
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  /** int openat(int dirfd, const char *path, int flags, mode_t mode) */
  openat: { parameters: ["i32", "buffer", "i32", "u32"], result: "i32" },
  /** int close(int fd) */
  close: { parameters: ["i32"], result: "i32" },
  /** int dup(int fd) */
  dup: { parameters: ["i32"], result: "i32" },
  /** void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset) */
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  /** int munmap(void *addr, size_t length) */
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  /** int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf) */
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
  /** int fstatfs(int fd, struct statfs *buf) */
  fstatfs: { parameters: ["i32", "buffer"], result: "i32" },
  /** int socket(int domain, int type, int protocol) */
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** int bind(int fd, const struct sockaddr *addr, socklen_t len) */
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** int listen(int fd, int backlog) */
  listen: { parameters: ["i32", "i32"], result: "i32" },
  /** int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) */
  accept4: { parameters: ["i32", "pointer", "pointer", "i32"], result: "i32" },
  /** int connect(int fd, const struct sockaddr *addr, socklen_t len) — on nonblocking sockets */
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /**
   * ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) — the
   * result read as its low 32 bits (`i32`): every message surfaceport sends
   * or receives is far below 2^31 bytes, and -1 stays -1 (x86_64 and aarch64
   * return it in one 64-bit register). An `isize` result costs a BigInt
   * (~40 bytes of garbage) per call, and a spinning receive makes thousands.
   */
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  /** ssize_t recvmsg(int fd, struct msghdr *msg, int flags) — read as `i32`, as `sendmsg` */
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  /**
   * ssize_t send(int fd, const void *buf, size_t n, int flags) — read as `i32`, as `sendmsg`:
   * the doorbell's one-byte ring (`MSG_DONTWAIT | MSG_NOSIGNAL`)
   */
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "i32" },
  /** int getsockopt(int fd, int level, int name, void *value, socklen_t *len) */
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  /** int setsockopt(int fd, int level, int name, const void *value, socklen_t len) */
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  /** int ioctl(int fd, unsigned long request, int *value) — SIOCOUTQ on a socket */
  ioctl_int: { name: "ioctl", parameters: ["i32", "u64", "buffer"], result: "i32" },
  /** int shutdown(int fd, int how) */
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  /** int poll(struct pollfd *fds, nfds_t n, int timeout_ms) — on a worker thread */
  poll_wait: {
    name: "poll",
    parameters: ["buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  /** int poll(struct pollfd *fds, nfds_t n, int timeout_ms) — with timeout 0, on this thread */
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  /** int eventfd(unsigned int initval, int flags) */
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  /** ssize_t write(int fd, const void *buf, size_t n) */
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /**
   * ssize_t read(int fd, void *buf, size_t n) — read as `i32` (no read here asks for 2 GiB): an
   * `isize` result comes back as a BigInt, ~40 B per call (the from-gst bridge drains inotify
   * per frame a consumer lets go of)
   */
  read: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  /** ssize_t pread(int fd, void *buf, size_t n, off_t offset) — reads without moving the shared file offset */
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  /** int chmod(const char *path, mode_t mode) */
  chmod: { parameters: ["buffer", "u32"], result: "i32" },
  /** int unlink(const char *path) */
  unlink: { parameters: ["buffer"], result: "i32" },
  /** DIR *opendir(const char *path) */
  opendir: { parameters: ["buffer"], result: "pointer" },
  /** struct dirent *readdir(DIR *dir) — d_name at offset 19 on LP64 glibc */
  readdir: { parameters: ["pointer"], result: "pointer" },
  /** int closedir(DIR *dir) */
  closedir: { parameters: ["pointer"], result: "i32" },
  /** ssize_t readlink(const char *path, char *buf, size_t size) — no terminating NUL */
  readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  /** int unlinkat(int dirfd, const char *path, int flags) */
  unlinkat: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  /** int inotify_init1(int flags) */
  inotify_init1: { parameters: ["i32"], result: "i32" },
  /** int inotify_add_watch(int fd, const char *path, uint32_t mask) */
  inotify_add_watch: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** int clock_gettime(clockid_t clock, struct timespec *ts) */
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
  /** char *getenv(const char *name) — `XDG_RUNTIME_DIR`, where the doorbell lives (no Deno permission: both ends of a channel must find the same directory) */
  getenv: { parameters: ["buffer"], result: "pointer" },
  /** uid_t geteuid(void) */
  geteuid: { parameters: [], result: "u32" },
  /** int *__errno_location(void) — glibc's thread-local errno */
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded libc symbols. */
export type Libc = Library<typeof libcSymbols>;

let loaded: Libc | undefined;

/** The C library the Linux backend loads (glibc's soname). */
export const LIBC_PATH = "libc.so.6";

/** Opens libc once (on first use, not on import) and returns its symbols. */
export function libc(): Libc {
  if (loaded) return loaded;
  if (runtime.os !== "linux") {
    throw new UnsupportedError(`the libc backend runs on Linux, not ${runtime.os}`);
  }
  if (runtime.arch !== "x86_64" && runtime.arch !== "aarch64") {
    throw new UnsupportedError(`surfaceport supports x86_64 and aarch64, not ${runtime.arch}`);
  }
  try {
    loaded = runtime.dlopen(LIBC_PATH, libcSymbols);
  } catch (cause) {
    throw new LibraryLoadError(
      runtime.isPermissionError(cause)
        ? `could not open ${LIBC_PATH}: the --allow-ffi permission is missing ` +
          `(surfaceport calls libc through FFI; run with ${runtime.ffiCommand} ...)`
        : `could not open ${LIBC_PATH}: ${(cause as Error)?.message ?? cause} ` +
          "(surfaceport needs glibc: musl systems such as Alpine are not supported)",
      { cause },
    );
  }
  return loaded;
}
