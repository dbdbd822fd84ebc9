/**
 * Facts about the macOS SDK that the TypeScript relies on: the shape of the
 * facts file (`native/sdk-facts.json`) and the TypeScript tables it is
 * checked against — `EXPECTED_ABI` (what the shim reports on load), `DARWIN`,
 * the sizes and offsets the darwin codecs write with ({@link CODEC_FACTS})
 * and the FFI tables of `ffi/darwin.ts` ({@link FFI_TABLES}).
 *
 * - `tools/sdk_facts_extract.ts` extracts the facts on Linux without running
 *   anything for macOS: numbers compiled with clang against the SDK headers
 *   and read back from the object, declarations from clang's AST dump.
 * - `tools/sdk_facts_exports.ts` finds the library that exports each FFI
 *   symbol, from the SDK's `.tbd` stubs and `libsystem-exports.txt`.
 * - `tools/sdk_facts_compare.ts` lists every difference between the facts
 *   and the TypeScript.
 *
 * `deno task sdk-facts DIR` writes them to `native/sdk-facts.json`;
 * `tests/sdk_facts_test.ts` compares that file with the TypeScript in every
 * run (no SDK needed) and, when `MACOS_SDK` is set, regenerates it.
 *
 * @module
 */

import { coreFoundation, coreVideo, ioSurface, libSystem } from "../ffi/darwin.ts";
import {
  AUDIT_TRAILER_TOKEN_OFFSET,
  MACH_MSG_AUDIT_TRAILER_SIZE,
  MACH_MSG_BODY_SIZE,
  MACH_MSG_HEADER_SIZE,
  MACH_MSG_OTHER_DESCRIPTOR_SIZE,
  MACH_MSG_PORT_DESCRIPTOR_SIZE,
  MACH_MSG_TRAILER_SIZE,
} from "../src/darwin/structs.ts";
import { NO_SENDERS_NOTIFICATION_SIZE } from "../src/darwin/messages.ts";
import { fourccOf, PIXEL_FORMATS, type PixelFormat } from "../src/core/geometry.ts";

/** The architectures facts are extracted for. */
export const ARCHITECTURES = ["arm64", "x86_64"] as const;
/** One of {@link ARCHITECTURES}. */
export type Architecture = typeof ARCHITECTURES[number];

/** The committed facts file, relative to the repository root. */
export const FACTS_PATH = "native/sdk-facts.json";

/** The CoreVideo constant of each pixel format surfaceport writes. */
const CORE_VIDEO_FORMATS: Readonly<Record<PixelFormat, string>> = {
  BGRA: "kCVPixelFormatType_32BGRA",
  RGBA: "kCVPixelFormatType_32RGBA",
  L008: "kCVPixelFormatType_OneComponent8",
  "420v": "kCVPixelFormatType_420YpCbCr8BiPlanarVideoRange",
  "420f": "kCVPixelFormatType_420YpCbCr8BiPlanarFullRange",
  y420: "kCVPixelFormatType_420YpCbCr8Planar",
};

function pixelFormatFacts(): Record<string, number> {
  return Object.fromEntries(
    PIXEL_FORMATS.map((format) => [CORE_VIDEO_FORMATS[format], fourccOf(format)]),
  );
}

/**
 * Sizes and offsets the darwin codecs write with that `EXPECTED_ABI` does
 * not already cover, keyed by the C expression that gives them.
 */
export const CODEC_FACTS: Readonly<Record<string, number>> = {
  "sizeof(mach_msg_header_t)": MACH_MSG_HEADER_SIZE,
  "sizeof(mach_msg_body_t)": MACH_MSG_BODY_SIZE,
  "sizeof(mach_msg_port_descriptor_t)": MACH_MSG_PORT_DESCRIPTOR_SIZE,
  "sizeof(mach_msg_ool_descriptor_t)": MACH_MSG_OTHER_DESCRIPTOR_SIZE,
  "sizeof(mach_msg_ool_ports_descriptor_t)": MACH_MSG_OTHER_DESCRIPTOR_SIZE,
  "sizeof(mach_msg_guarded_port_descriptor_t)": MACH_MSG_OTHER_DESCRIPTOR_SIZE,
  "offsetof(mach_msg_ool_descriptor_t, type)": 11,
  "offsetof(mach_msg_ool_ports_descriptor_t, type)": 11,
  "offsetof(mach_msg_guarded_port_descriptor_t, type)": 11,
  "sizeof(mach_msg_trailer_t)": MACH_MSG_TRAILER_SIZE,
  "sizeof(mach_msg_audit_trailer_t)": MACH_MSG_AUDIT_TRAILER_SIZE,
  "offsetof(mach_msg_audit_trailer_t, msgh_trailer_type)": 0,
  "offsetof(mach_msg_audit_trailer_t, msgh_trailer_size)": 4,
  "offsetof(mach_msg_audit_trailer_t, msgh_audit)": AUDIT_TRAILER_TOKEN_OFFSET,
  "sizeof(security_token_t)": 8,
  // What isNoSenders requires of the notification (src/darwin/messages.ts).
  "sizeof(mach_no_senders_notification_t) - sizeof(mach_msg_format_0_trailer_t)":
    NO_SENDERS_NOTIFICATION_SIZE,
  // The pixel formats IOSurfaceCreate and the wire header are given (src/core/geometry.ts).
  ...pixelFormatFacts(),
};

/**
 * `EXPECTED_ABI` keys whose value the SDK headers do not contain: they are
 * what libbsm's functions do, so only the shim's report on a Mac checks them.
 */
export const NOT_IN_HEADERS: Readonly<Record<string, string>> = {
  "audit_token_to_euid index": "libbsm function: only the shim's report on a Mac shows the index",
  "audit_token_to_egid index": "libbsm function: only the shim's report on a Mac shows the index",
  "audit_token_to_pid index": "libbsm function: only the shim's report on a Mac shows the index",
};

/** The FFI tables of `ffi/darwin.ts`, with the library each must be opened from. */
export const FFI_TABLES: readonly {
  table: string;
  symbols: Deno.ForeignLibraryInterface;
  library: (installName: string) => boolean;
  libraryDescription: string;
}[] = [
  {
    table: "libSystem",
    symbols: libSystem,
    library: (name) => name.startsWith("/usr/lib/system/"),
    libraryDescription: "a libSystem sub-library (/usr/lib/system/, umbrella libSystem.B.dylib)",
  },
  ...(["CoreFoundation", "IOSurface", "CoreVideo"] as const).map((framework) => ({
    table: framework === "IOSurface"
      ? "ioSurface"
      : framework[0].toLowerCase() + framework.slice(1),
    symbols: framework === "CoreFoundation"
      ? coreFoundation
      : framework === "IOSurface"
      ? ioSurface
      : coreVideo,
    library: (name: string) =>
      name === `/System/Library/Frameworks/${framework}.framework/Versions/A/${framework}`,
    libraryDescription: `/System/Library/Frameworks/${framework}.framework/Versions/A/${framework}`,
  })),
];

/** A C type as the ABI sees it. */
export interface TypeFact {
  /** As written in the header (typedef names, qualifiers). */
  type: string;
  /** `void`, `integer`, `pointer`, `real`, `record` or `other`. */
  class: string;
  /** `sizeof` (0 for void). */
  size: number;
  /** For integers: whether the type is signed. */
  signed?: boolean;
}

/** One symbol of `ffi/darwin.ts` as the SDK declares it. */
export interface SymbolFact {
  /** `function` or `variable`. */
  kind: "function" | "variable";
  /** The C declaration, from the headers. */
  declaration: string;
  /** The function's result, or the variable's type. */
  result: TypeFact;
  /** The function's parameters (empty for a variable). */
  parameters: TypeFact[];
}

/** Where a symbol is exported from. */
export interface ExportFact {
  /** The install name of the exporting library (null: no stub exports it). */
  library: string | null;
  /** The architectures whose export list holds it. */
  architectures: string[];
  /** The stub file it was found in. */
  source: string | null;
}

/** The facts of one architecture. */
export interface ArchitectureFacts {
  /** Numbers keyed by the expression or name (EXPECTED_ABI keys, DARWIN names, CODEC_FACTS). */
  values: Record<string, number>;
  /** Declarations of the FFI symbols (null: not declared in the SDK headers). */
  symbols: Record<string, SymbolFact | null>;
}

/** The whole facts file. */
export interface SdkFacts {
  /** What this file is. */
  about: string;
  /** The SDK version the facts came from (`__MAC_OS_X_VERSION_MAX_ALLOWED`). */
  sdkVersion: number;
  /** EXPECTED_ABI keys the headers cannot give, with why. */
  notInHeaders: Record<string, string>;
  /** Per architecture. */
  architectures: Record<Architecture, ArchitectureFacts>;
  /** Exporting library of every FFI symbol, keyed by the C name. */
  exports: Record<string, ExportFact>;
}

/** Every FFI symbol's C name, in table order. */
export function ffiSymbolNames(): string[] {
  const names: string[] = [];
  for (const { symbols } of FFI_TABLES) {
    for (const [key, definition] of Object.entries(symbols)) {
      const name = ("name" in definition && typeof definition.name === "string")
        ? definition.name
        : key;
      if (!names.includes(name)) names.push(name);
    }
  }
  return names;
}
