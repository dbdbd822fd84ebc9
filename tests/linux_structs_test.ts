import assert from "node:assert/strict";
import {
  cmsgSpace,
  decodeControl,
  decodeMsghdr,
  decodeStatfsType,
  decodeStatx,
  decodeUcred,
  encodeFlock,
  encodeMsghdr,
  encodeRights,
  encodeSockaddrUn,
  LINUX,
  STATFS_SIZE,
} from "../src/linux/structs.ts";
import { socketAddress } from "../src/linux/listener.ts";

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(" ");
}

Deno.test("linux structs: msghdr golden bytes (x86_64 / aarch64 LP64)", () => {
  const bytes = new Uint8Array(56);
  const fields = {
    name: 0x1122334455667788n,
    nameLength: 0x10,
    iov: 0xaabbccdd00112233n,
    iovLength: 1,
    control: 0x0000700000001000n,
    controlLength: 24,
    flags: LINUX.MSG_CTRUNC,
  };
  encodeMsghdr(new DataView(bytes.buffer), fields);
  assert.equal(
    hex(bytes),
    "88 77 66 55 44 33 22 11 10 00 00 00 00 00 00 00 " +
      "33 22 11 00 dd cc bb aa 01 00 00 00 00 00 00 00 " +
      "00 10 00 00 00 70 00 00 18 00 00 00 00 00 00 00 " +
      "08 00 00 00 00 00 00 00",
  );
  assert.deepEqual(decodeMsghdr(new DataView(bytes.buffer)), fields);
});

Deno.test("linux structs: SCM_RIGHTS cmsg golden bytes and CMSG_SPACE", () => {
  assert.equal(cmsgSpace(4), 24);
  assert.equal(cmsgSpace(8), 24);
  assert.equal(cmsgSpace(12), 32);
  const bytes = new Uint8Array(24).fill(0xee);
  const length = encodeRights(new DataView(bytes.buffer), [7]);
  assert.equal(length, 24);
  assert.equal(
    hex(bytes),
    "14 00 00 00 00 00 00 00 01 00 00 00 01 00 00 00 07 00 00 00 00 00 00 00",
  );
  const two = new Uint8Array(24);
  encodeRights(new DataView(two.buffer), [3, 4]);
  assert.deepEqual(decodeControl(new DataView(two.buffer), 24), {
    fds: [3, 4],
    others: [],
    malformed: false,
  });
});

Deno.test("linux structs: control parsing collects every fd and flags malformed headers", () => {
  const bytes = new Uint8Array(80);
  const view = new DataView(bytes.buffer);
  encodeRights(view, [5]);
  // second cmsg: SCM_CREDENTIALS (type 2), 12 data bytes
  view.setBigUint64(24, 28n, true);
  view.setInt32(32, 1, true);
  view.setInt32(36, 2, true);
  // third, after CMSG_ALIGN(28) = 32 bytes: rights with 2 fds
  encodeRights(new DataView(bytes.buffer, 56), [8, 9]);
  assert.deepEqual(decodeControl(view, 80), {
    fds: [5, 8, 9],
    others: [{ level: 1, type: 2 }],
    malformed: false,
  });
  view.setBigUint64(0, 1000n, true);
  assert.equal(decodeControl(view, 80).malformed, true);
  view.setBigUint64(0, 3n, true);
  assert.equal(decodeControl(view, 80).malformed, true);
  assert.deepEqual(decodeControl(view, 0), { fds: [], others: [], malformed: false });
});

Deno.test("linux structs: sockaddr_un, abstract and filesystem", () => {
  const abstract = socketAddress("cam");
  assert.equal(abstract.length, 2 + 1 + "surfaceport/cam".length);
  assert.equal(hex(abstract.bytes.subarray(0, 6)), "01 00 00 73 75 72");
  assert.equal(abstract.path, undefined);
  const file = socketAddress("/tmp/x.sock");
  assert.equal(file.path, "/tmp/x.sock");
  assert.equal(file.length, 2 + 11 + 1);
  assert.equal(hex(file.bytes.subarray(0, 4)), "01 00 2f 74");
  assert.throws(() => encodeSockaddrUn(new Uint8Array(108), false), RangeError);
  assert.throws(() => socketAddress(""), TypeError);
  assert.throws(() => socketAddress("a\0b"), TypeError);
  assert.throws(() => socketAddress("x".repeat(100)), RangeError);
});

Deno.test("linux structs: flock, ucred, statx and statfs layouts", () => {
  const statfs = new Uint8Array(STATFS_SIZE);
  new DataView(statfs.buffer).setBigUint64(0, 0x958458f6n, true);
  assert.equal(decodeStatfsType(new DataView(statfs.buffer)), LINUX.HUGETLBFS_MAGIC);
  const flock = new Uint8Array(32).fill(0xff);
  encodeFlock(new DataView(flock.buffer), LINUX.F_RDLCK);
  assert.equal(hex(flock), "00 00 00 00 " + "00 ".repeat(27) + "00");
  encodeFlock(new DataView(flock.buffer), LINUX.F_WRLCK);
  assert.equal(flock[0], 1);
  const ucred = new Uint8Array([0x39, 0x30, 0, 0, 0xe8, 0x03, 0, 0, 0x64, 0, 0, 0]);
  assert.deepEqual(decodeUcred(new DataView(ucred.buffer)), { pid: 12345, uid: 1000, gid: 100 });
  const statx = new Uint8Array(256);
  const v = new DataView(statx.buffer);
  v.setUint32(0, 0x7ff, true);
  v.setUint32(16, 3, true);
  v.setUint32(20, 1000, true);
  v.setUint16(28, 0o100777, true);
  v.setBigUint64(32, 1234n, true);
  v.setBigUint64(40, 4096n, true);
  v.setUint32(136, 0, true);
  v.setUint32(140, 1, true);
  assert.deepEqual(decodeStatx(v), {
    mask: 0x7ff,
    mode: 0o100777,
    nlink: 3,
    uid: 1000,
    ino: 1234n,
    size: 4096n,
    devMajor: 0,
    devMinor: 1,
  });
});
