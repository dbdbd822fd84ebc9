/**
 * Just enough of the Mach-O format to read facts back from objects compiled
 * for macOS and to check the shim's universal dylib on Linux: universal
 * (fat) headers, 64-bit load commands, sections, linked libraries, exported
 * symbols are left to the LLVM tools. Nothing here runs Mach-O code.
 *
 * @module
 */

const MH_MAGIC_64 = 0xfeedfacf;
const FAT_MAGIC = 0xcafebabe;
const LC_SEGMENT_64 = 0x19;
const LC_CODE_SIGNATURE = 0x1d;
const LC_BUILD_VERSION = 0x32;
const CPU_TYPE_X86_64 = 0x01000007;
const CPU_TYPE_ARM64 = 0x0100000c;
const CSMAGIC_EMBEDDED_SIGNATURE = 0xfade0cc0;
const CSMAGIC_CODEDIRECTORY = 0xfade0c02;
const CSSLOT_CODEDIRECTORY = 0;
const CS_ADHOC = 0x2;
const CS_HASHTYPE_SHA256 = 2;

/** One load command of a 64-bit Mach-O image. */
export interface LoadCommand {
  /** `cmd` */
  cmd: number;
  /** Offset of the command in the image. */
  offset: number;
  /** `cmdsize` */
  size: number;
}

function cString(bytes: Uint8Array, offset: number, max: number): string {
  let end = offset;
  while (end < offset + max && bytes[end] !== 0) end++;
  return new TextDecoder().decode(bytes.subarray(offset, end));
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The load commands of a 64-bit little-endian Mach-O image (object or dylib). */
export function loadCommands(image: Uint8Array): LoadCommand[] {
  const v = view(image);
  if (image.length < 32 || v.getUint32(0, true) !== MH_MAGIC_64) {
    throw new Error("not a 64-bit little-endian Mach-O image");
  }
  const count = v.getUint32(16, true);
  const commands: LoadCommand[] = [];
  let offset = 32;
  for (let i = 0; i < count; i++) {
    const cmd = v.getUint32(offset, true);
    const size = v.getUint32(offset + 4, true);
    if (size < 8 || offset + size > image.length) throw new Error("truncated load command");
    commands.push({ cmd, offset, size });
    offset += size;
  }
  return commands;
}

/** The bytes of section `segment,section` of a 64-bit Mach-O image, or undefined. */
export function sectionBytes(
  image: Uint8Array,
  segment: string,
  section: string,
): Uint8Array | undefined {
  const v = view(image);
  for (const { cmd, offset } of loadCommands(image)) {
    if (cmd !== LC_SEGMENT_64) continue;
    const nsects = v.getUint32(offset + 64, true);
    for (let i = 0; i < nsects; i++) {
      const s = offset + 72 + 80 * i;
      if (cString(image, s, 16) !== section || cString(image, s + 16, 16) !== segment) continue;
      const size = Number(v.getBigUint64(s + 40, true));
      const fileOffset = v.getUint32(s + 48, true);
      return image.subarray(fileOffset, fileOffset + size);
    }
  }
  return undefined;
}

/** The slices of a universal (fat) binary by architecture name (`arm64`, `x86_64`). */
export function fatSlices(file: Uint8Array): Map<string, Uint8Array> {
  const v = view(file);
  if (file.length < 8 || v.getUint32(0, false) !== FAT_MAGIC) {
    throw new Error("not a universal (fat) Mach-O file");
  }
  const slices = new Map<string, Uint8Array>();
  const count = v.getUint32(4, false);
  for (let i = 0; i < count; i++) {
    const at = 8 + 20 * i;
    const cpu = v.getUint32(at, false);
    const offset = v.getUint32(at + 8, false);
    const size = v.getUint32(at + 12, false);
    const name = cpu === CPU_TYPE_ARM64
      ? "arm64"
      : cpu === CPU_TYPE_X86_64
      ? "x86_64"
      : `cpu${cpu}`;
    slices.set(name, file.subarray(offset, offset + size));
  }
  return slices;
}

/** `LC_BUILD_VERSION`'s minimum OS version as "major.minor", or undefined. */
export function minimumOs(image: Uint8Array): string | undefined {
  const v = view(image);
  for (const { cmd, offset } of loadCommands(image)) {
    if (cmd !== LC_BUILD_VERSION) continue;
    const minos = v.getUint32(offset + 12, true);
    return `${minos >>> 16}.${(minos >>> 8) & 0xff}`;
  }
  return undefined;
}

/** What {@link checkAdhocSignature} found. */
export interface SignatureCheck {
  /** True if the image has an `LC_CODE_SIGNATURE`. */
  signed: boolean;
  /** Why the signature is not a valid ad-hoc SHA-256 signature (empty if it is). */
  problems: string[];
}

/**
 * Checks an image's embedded code signature the way the kernel checks its
 * pages: an ad-hoc CodeDirectory with SHA-256 hashes, and each page of the
 * image up to `codeLimit` hashing to its slot.
 */
export async function checkAdhocSignature(image: Uint8Array): Promise<SignatureCheck> {
  const command = loadCommands(image).find((c) => c.cmd === LC_CODE_SIGNATURE);
  if (!command) return { signed: false, problems: ["no LC_CODE_SIGNATURE"] };
  const v = view(image);
  const dataOffset = v.getUint32(command.offset + 8, true);
  const problems: string[] = [];
  if (v.getUint32(dataOffset, false) !== CSMAGIC_EMBEDDED_SIGNATURE) {
    return { signed: true, problems: ["no embedded signature SuperBlob"] };
  }
  const count = v.getUint32(dataOffset + 8, false);
  let directory = -1;
  for (let i = 0; i < count; i++) {
    const type = v.getUint32(dataOffset + 12 + 8 * i, false);
    if (type === CSSLOT_CODEDIRECTORY) {
      directory = dataOffset + v.getUint32(dataOffset + 16 + 8 * i, false);
    }
  }
  if (directory < 0 || v.getUint32(directory, false) !== CSMAGIC_CODEDIRECTORY) {
    return { signed: true, problems: ["no CodeDirectory"] };
  }
  const flags = v.getUint32(directory + 12, false);
  const hashOffset = v.getUint32(directory + 16, false);
  const codeSlots = v.getUint32(directory + 28, false);
  const codeLimit = v.getUint32(directory + 32, false);
  const hashSize = v.getUint8(directory + 36);
  const hashType = v.getUint8(directory + 37);
  const pageSize = 1 << v.getUint8(directory + 39);
  if ((flags & CS_ADHOC) === 0) {
    problems.push(`CodeDirectory flags 0x${flags.toString(16)}: not ad hoc`);
  }
  if (hashType !== CS_HASHTYPE_SHA256 || hashSize !== 32) {
    problems.push(`hash type ${hashType} size ${hashSize}: not SHA-256`);
    return { signed: true, problems };
  }
  if (codeLimit !== dataOffset) {
    problems.push(`codeLimit ${codeLimit} != signature offset ${dataOffset}`);
  }
  if (codeSlots !== Math.ceil(codeLimit / pageSize)) {
    problems.push(`${codeSlots} code slots for ${codeLimit} bytes`);
  }
  for (let i = 0; i < codeSlots; i++) {
    const page = image.subarray(i * pageSize, Math.min((i + 1) * pageSize, codeLimit));
    const actual = new Uint8Array(
      await crypto.subtle.digest("SHA-256", page as Uint8Array<ArrayBuffer>),
    );
    const slot = directory + hashOffset + 32 * i;
    const expected = image.subarray(slot, slot + 32);
    if (actual.some((byte, j) => byte !== expected[j])) problems.push(`page ${i}: hash mismatch`);
  }
  return { signed: true, problems };
}

/** The SHA-256 of `bytes` as lowercase hex. */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>),
  );
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}
