/**
 * The fuzzer's source of variation: a seeded xorshift PRNG ({@link Xorshift})
 * and {@link mutate}, which turns a valid encoding into a mutated copy —
 * bit flips, byte sets, field-targeted extreme values, truncation,
 * extension, splices. The same seed gives the same inputs on every machine,
 * so a finding reproduces with `deno task fuzz --seed S --only TARGET`.
 *
 * @module
 */

/** xorshift32: tiny, fast and the same on every machine for a given seed. */
export class Xorshift {
  #state: number;

  /** Seeds the generator (0 is replaced: xorshift never leaves state 0). */
  constructor(seed: number) {
    this.#state = (seed >>> 0) || 0x9e3779b9;
  }

  /** The next 32-bit unsigned value. */
  next(): number {
    let x = this.#state;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#state = x >>> 0;
    return this.#state;
  }

  /** An integer in `[0, n)`. */
  below(n: number): number {
    return n <= 1 ? 0 : this.next() % n;
  }

  /** One element of `items`. */
  pick<T>(items: readonly T[]): T {
    return items[this.below(items.length)];
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.next() / 2 ** 32 < p;
  }
}

/** A field of a seed layout worth hitting with extreme values. */
export interface Field {
  offset: number;
  size: 1 | 2 | 4 | 8;
}

const EXTREMES_64 = [
  0n,
  1n,
  2n,
  7n,
  8n,
  15n,
  16n,
  17n,
  136n,
  4096n,
  0x7fn,
  0x80n,
  0xffn,
  0x7fffn,
  0x8000n,
  0xffffn,
  0x7fffffffn,
  0x80000000n,
  0xffffffffn,
  0x100000000n,
  (1n << 53n) - 1n,
  1n << 53n,
  0x7fffffffffffffffn,
  0x8000000000000000n,
  0xffffffffffffffffn,
];

function writeExtreme(bytes: Uint8Array, field: Field, rng: Xorshift): void {
  if (field.offset + field.size > bytes.length) return;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const mask = (1n << BigInt(8 * field.size)) - 1n;
  let value = rng.pick(EXTREMES_64);
  if (rng.chance(0.25)) value = mask - value; // near the top of the field
  if (rng.chance(0.2)) value += BigInt(rng.below(5)) - 2n; // off by a little
  value &= mask;
  switch (field.size) {
    case 1:
      view.setUint8(field.offset, Number(value));
      break;
    case 2:
      view.setUint16(field.offset, Number(value), true);
      break;
    case 4:
      view.setUint32(field.offset, Number(value), true);
      break;
    case 8:
      view.setBigUint64(field.offset, value, true);
      break;
  }
}

const INTERESTING_BYTES = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, 0x20, 0x22, 0x5b, 0x7b];

/**
 * One mutated copy of `seed`: one to four mutations, each a bit flip, a
 * byte set, a field-targeted extreme, a truncation, an extension, a
 * chunk copy, an insertion or a deletion.
 */
export function mutate(seed: Uint8Array, fields: readonly Field[], rng: Xorshift): Uint8Array {
  let bytes = seed.slice();
  const rounds = 1 + rng.below(4);
  for (let round = 0; round < rounds; round++) {
    const kind = rng.below(10);
    if (kind <= 1 && bytes.length > 0) {
      // bit flips
      for (let i = 1 + rng.below(4); i > 0; i--) {
        bytes[rng.below(bytes.length)] ^= 1 << rng.below(8);
      }
    } else if (kind === 2 && bytes.length > 0) {
      bytes[rng.below(bytes.length)] = rng.chance(0.5)
        ? rng.pick(INTERESTING_BYTES)
        : rng.below(256);
    } else if (kind <= 4 && fields.length > 0) {
      writeExtreme(bytes, rng.pick(fields), rng);
    } else if (kind === 5) {
      // truncation, biased towards the interesting short lengths
      const length = rng.chance(0.3)
        ? rng.below(Math.min(bytes.length + 1, 24))
        : rng.below(bytes.length + 1);
      bytes = bytes.slice(0, length);
    } else if (kind === 6) {
      // extension with random or zero bytes
      const extra = new Uint8Array(rng.chance(0.5) ? 1 + rng.below(8) : 1 + rng.below(300));
      if (rng.chance(0.5)) { for (let i = 0; i < extra.length; i++) extra[i] = rng.below(256); }
      const longer = new Uint8Array(bytes.length + extra.length);
      longer.set(bytes);
      longer.set(extra, bytes.length);
      bytes = longer;
    } else if (kind === 7 && bytes.length > 1) {
      // copy a chunk over another place
      const length = 1 + rng.below(Math.min(16, bytes.length));
      const from = rng.below(bytes.length - length + 1);
      const to = rng.below(bytes.length - length + 1);
      bytes.copyWithin(to, from, from + length);
    } else if (kind === 8) {
      // insert a few bytes (shifts every later field)
      const at = rng.below(bytes.length + 1);
      const count = 1 + rng.below(8);
      const longer = new Uint8Array(bytes.length + count);
      longer.set(bytes.subarray(0, at));
      for (let i = 0; i < count; i++) longer[at + i] = rng.below(256);
      longer.set(bytes.subarray(at), at + count);
      bytes = longer;
    } else if (bytes.length > 0) {
      // delete a few bytes
      const at = rng.below(bytes.length);
      const count = 1 + rng.below(Math.min(8, bytes.length - at));
      const shorter = new Uint8Array(bytes.length - count);
      shorter.set(bytes.subarray(0, at));
      shorter.set(bytes.subarray(at + count), at);
      bytes = shorter;
    }
  }
  return bytes;
}
