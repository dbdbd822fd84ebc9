/**
 * Finds and opens the surfaceport shim (`native/shim.m`) on macOS,
 * synchronously, on every path: `Surface.create`, `listen`, `publish`,
 * `SurfacePool`, `PixelBuffer` and `list()` all need it and none of them can
 * await. The decision, in order:
 *
 * | case                                                       | what is opened                                                                                   |
 * | ---------------------------------------------------------- | ------------------------------------------------------------------------------------------------ |
 * | `SURFACEPORT_SHIM_PATH` set (readable with `--allow-env`)   | that file; it must open                                                                          |
 * | a `file:` package (a checkout, `node_modules`)              | `native/build/` if it exists (read permission needed to look), else `native/prebuilt/` in place   |
 * | a remote package (JSR), a `deno compile` binary, or a `file:` package without `native/prebuilt/` | the copy in the module graph (`ffi/darwin_shim_embedded.ts`), written to a fresh private directory (`--allow-write`), opened, deleted |
 *
 * The shipped bytes are opened only if their SHA-256 is
 * {@link PREBUILT_SHIM_SHA256}: always for the embedded copy (hashed in
 * memory, no permission needed); for `native/prebuilt/` when it can be read
 * (`--allow-read`); without read permission it is opened unhashed, as the
 * package's own file next to the code that loads it (the ABI report is
 * checked either way). Nothing is fetched: no network, no cache, no
 * `@denosaurs/plug`, so a frozen lockfile, `--cached-only` and `deno compile`
 * all work.
 *
 * Every input is a {@link ShimWorld}, so that tests run the whole decision
 * table on Linux with fake files, permissions and `dlopen`.
 *
 * @module
 */

import { LibraryLoadError } from "../src/core/errors.ts";
import { sha256HexSync } from "../src/core/sha256.ts";
import { PREBUILT_SHIM_SHA256 } from "./darwin_prebuilt.ts";
import { EMBEDDED_SHIM_PACKED } from "./darwin_shim_embedded.ts";
import { runtime } from "./runtime.ts";

/** The environment variable naming an explicit shim path. */
export const SHIM_PATH_ENV = "SURFACEPORT_SHIM_PATH";
/** The shim's file name, in `native/build/` and `native/prebuilt/`. */
export const SHIM_FILE_NAME = "libsurfaceport_shim.dylib";

/** Where a loaded shim came from. */
export type ShimSource = "env" | "build" | "package" | "embedded";

/** What the loader opened and why: `doctor` prints it. */
export interface ShimOrigin {
  /**
   * `env`: `SURFACEPORT_SHIM_PATH`; `build`: `native/build/` of a checkout;
   * `package`: `native/prebuilt/` read in place; `embedded`: the copy in the
   * module graph, written to a private file for `dlopen` (deleted after).
   */
  source: ShimSource;
  /** The file `dlopen` opened. */
  path: string;
  /** SHA-256 (hex) of what was opened; `undefined` if it could not be read (no `--allow-read`). */
  sha256: string | undefined;
  /** Whether {@link ShimOrigin.sha256} is the shipped dylib's. */
  shipped: boolean;
  /** What was skipped on the way and why, e.g. "SURFACEPORT_SHIM_PATH not read: no --allow-env". */
  notes: string[];
}

/** Everything the decision reads or does; {@link hostShimWorld} is the real one. */
export interface ShimWorld {
  /** `import.meta.url` of a file in `ffi/` of the package. */
  moduleUrl: string;
  /** `Deno.build.standalone`: a `deno compile` binary, whose package files exist only in its virtual file system. */
  standalone: boolean;
  /** Whether a permission is granted now (never prompts). */
  granted(name: "env" | "read", target: string): boolean;
  /** `Deno.env.get` */
  env(name: string): string | undefined;
  /** Whether `path` is a regular file. */
  isFile(path: string): boolean;
  /** `Deno.readFileSync` */
  readFile(path: string): Uint8Array;
  /** Writes `bytes` as `name` into a fresh directory only this user can enter; returns the path. */
  writePrivate(name: string, bytes: Uint8Array): string;
  /** Removes what {@link ShimWorld.writePrivate} made. */
  removePrivate(path: string): void;
  /** `Deno.dlopen(path, shim symbols)`; throws its error unchanged. */
  dlopen(path: string): unknown;
}

/** Undoes `tools/embed_shim.ts`' packing: literal / zero-run pairs, base64. */
export function unpackShim(packed: string): Uint8Array {
  const bin = atob(packed);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const u32 = (at: number) =>
    (bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16) | (bytes[at + 3] << 24)) >>> 0;
  let size = 0;
  for (let at = 0; at < bytes.length;) {
    const literal = u32(at);
    const zeros = u32(at + 4 + literal);
    size += literal + zeros;
    at += 8 + literal;
  }
  const out = new Uint8Array(size);
  let to = 0;
  for (let at = 0; at < bytes.length;) {
    const literal = u32(at);
    out.set(bytes.subarray(at + 4, at + 4 + literal), to);
    to += literal + u32(at + 4 + literal);
    at += 8 + literal;
  }
  return out;
}

/** Why macOS refused to map a dylib, from the text `dlopen` returned (dyld / AMFI wording). */
export type CodeSignatureRefusal = "team-id" | "system-policy" | "unsigned";

/**
 * Classifies a `dlopen` failure that is a code-signing refusal. dyld 4 reports
 * `dlopen(P, 0x0005): tried: 'P' (code signature in <UUID> 'P' not valid for
 * use in process: REASON)`; older dyld `code signature in (P) not valid for use
 * in process using Library Validation: REASON`. REASON comes from the kernel.
 */
export function codeSignatureRefusal(text: string): CodeSignatureRefusal | undefined {
  if (!/code signature|not valid for use in process|library validation/i.test(text)) {
    return undefined;
  }
  if (/disallowed by system policy/i.test(text)) return "system-policy";
  if (/no cdhash|completely unsigned|unsigned library/i.test(text)) return "unsigned";
  // "mapping process and mapped file (non-platform) have different Team IDs",
  // "mapped file has no Team ID and is not a platform binary (signed with custom identity or adhoc?)",
  // "mapping process is a platform binary, but mapped file is not": library validation.
  return "team-id";
}

const ADVICE: Record<CodeSignatureRefusal, (path: string) => string> = {
  "team-id": () =>
    "this deno runs with library validation (the hardened runtime without the " +
    "com.apple.security.cs.disable-library-validation entitlement: a custom-signed or embedding " +
    "build; the official deno has it), so it loads only code signed with its own Team ID, and " +
    "the shim is ad-hoc signed (no Team ID). Run with the official deno, or sign a copy with " +
    "that Team ID (`codesign --force --sign 'Developer ID Application: …' COPY`) and run with " +
    `--allow-env and ${SHIM_PATH_ENV}=COPY`,
  "system-policy": (path) =>
    "Gatekeeper refused it (a quarantined download?): " +
    `\`xattr -d com.apple.quarantine ${path}\`, or build your own with \`make -C native\` and set ` +
    SHIM_PATH_ENV,
  "unsigned": (path) =>
    "it has no code signature, which arm64 macOS requires: sign it ad hoc " +
    `(\`codesign --force --sign - ${path}\`) or rebuild it with \`make -C native\``,
};

/** The LibraryLoadError for a failed `dlopen(path)` of the shim from `origin`. */
export function shimOpenError(path: string, cause: unknown, what: string): LibraryLoadError {
  if (runtime.isPermissionError(cause)) {
    return new LibraryLoadError(
      `could not open ${what} ${path}: the --allow-ffi permission is missing ` +
        `(surfaceport calls the system frameworks through FFI; run with ${runtime.ffiCommand} ...)`,
      { cause },
    );
  }
  const text = String((cause as Error)?.message ?? cause);
  const refusal = codeSignatureRefusal(text);
  if (refusal) {
    return new LibraryLoadError(
      `macOS refused to load ${what} ${path}: its code signature is not valid for this process ` +
        `(${text}): ${ADVICE[refusal](path)}`,
      { cause },
    );
  }
  return new LibraryLoadError(`could not open ${what} ${path}: ${text}`, { cause });
}

function fileUrlPath(url: URL): string {
  return decodeURIComponent(url.pathname);
}

/**
 * Decides which shim to open, opens it, and says what it did. Throws
 * `LibraryLoadError` with what to do when no shim can be opened.
 */
export function openShim<T>(world: ShimWorld): { shim: T; origin: ShimOrigin } {
  const notes: string[] = [];
  const opened = (source: ShimSource, path: string, sha256: string | undefined, what: string) => {
    let shim: T;
    try {
      shim = world.dlopen(path) as T;
    } catch (cause) {
      throw shimOpenError(path, cause, what);
    }
    return {
      shim,
      origin: { source, path, sha256, shipped: sha256 === PREBUILT_SHIM_SHA256, notes },
    };
  };
  const hashIfReadable = (path: string) =>
    world.granted("read", path) ? sha256HexSync(world.readFile(path)) : undefined;

  // 1. An explicit path.
  if (world.granted("env", SHIM_PATH_ENV)) {
    const path = world.env(SHIM_PATH_ENV);
    if (path) {
      return opened("env", path, hashIfReadable(path), `the shim named by ${SHIM_PATH_ENV}`);
    }
  } else {
    notes.push(`${SHIM_PATH_ENV} not read: no --allow-env`);
  }

  // 2. A package on the local disk (not inside a deno compile binary).
  const base = new URL(world.moduleUrl);
  const local = base.protocol === "file:" && !world.standalone;
  if (local) {
    const build = fileUrlPath(new URL(`../native/build/${SHIM_FILE_NAME}`, base));
    if (!world.granted("read", build)) {
      notes.push(`native/build/ not looked at: no --allow-read`);
    } else if (world.isFile(build)) {
      return opened("build", build, hashIfReadable(build), "the local build of the shim");
    }
    const packaged = fileUrlPath(new URL(`../native/prebuilt/${SHIM_FILE_NAME}`, base));
    if (!world.granted("read", packaged)) {
      notes.push("native/prebuilt/ not hashed: no --allow-read (the ABI report is checked)");
      return opened("package", packaged, undefined, "the shim shipped in the package");
    }
    if (world.isFile(packaged)) {
      const sha256 = sha256HexSync(world.readFile(packaged));
      if (sha256 !== PREBUILT_SHIM_SHA256) {
        throw new LibraryLoadError(
          `the shim shipped in the package, ${packaged}, has SHA-256 ${sha256}, not ` +
            `${PREBUILT_SHIM_SHA256} (ffi/darwin_prebuilt.ts): refusing to load it. Restore it ` +
            `(git checkout native/prebuilt), or build one with \`make -C native\``,
        );
      }
      return opened("package", packaged, sha256, "the shim shipped in the package");
    }
    notes.push(`${packaged} does not exist: using the copy in the module graph`);
  }

  // 3. The copy in the module graph: JSR, deno compile, a package without native/prebuilt/.
  const bytes = unpackShim(EMBEDDED_SHIM_PACKED);
  const sha256 = sha256HexSync(bytes);
  if (sha256 !== PREBUILT_SHIM_SHA256) {
    throw new LibraryLoadError(
      `the shim embedded in ffi/darwin_shim_embedded.ts has SHA-256 ${sha256}, not ` +
        `${PREBUILT_SHIM_SHA256}: refusing to load it (a damaged package: reinstall it)`,
    );
  }
  const where = world.standalone ? "inside a deno compile binary" : `from ${base.origin}`;
  let path: string;
  try {
    path = world.writePrivate(SHIM_FILE_NAME, bytes);
  } catch (cause) {
    throw new LibraryLoadError(
      runtime.isPermissionError(cause)
        ? `surfaceport runs ${where}, so macOS can load its shim only from a file written first, ` +
          "and that needs --allow-write (a fresh private temporary directory, " +
          "deleted right after loading): run with --allow-ffi --allow-write, or copy " +
          `native/prebuilt/${SHIM_FILE_NAME} from the package and run with --allow-env and ` +
          `${SHIM_PATH_ENV}=that path`
        : `could not write the shim to a temporary file: ${(cause as Error)?.message ?? cause}`,
      { cause },
    );
  }
  try {
    return opened("embedded", path, sha256, "the shim shipped in the package");
  } finally {
    world.removePrivate(path); // mapped now: the file is not needed any more
  }
}

/** The real {@link ShimWorld}: this package, and the host's permissions, files and `dlopen`. */
export function hostShimWorld(dlopen: (path: string) => unknown): ShimWorld {
  return {
    moduleUrl: import.meta.url,
    standalone: runtime.standalone,
    granted: (name, target) =>
      name === "read" ? runtime.files.mayAccess("read", target) : runtime.mayReadEnv(target),
    env: (name) => runtime.env(name),
    isFile(path) {
      try {
        return runtime.files.stat(path).isFile;
      } catch {
        return false;
      }
    },
    readFile: (path) => runtime.files.readFileSync(path),
    writePrivate: (name, bytes) => runtime.files.writePrivateFile(name, bytes),
    removePrivate(path) {
      try {
        runtime.files.removeTree(path.slice(0, path.lastIndexOf("/")));
      } catch {
        // best effort: it is private and in the temporary directory
      }
    },
    dlopen,
  };
}
