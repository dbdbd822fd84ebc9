/**
 * Uploads received frames to WebGPU textures with `device.queue.writeTexture`,
 * straight from the shared memory (no intermediate copy in JS). Not run in
 * CI — there is no GPU there — but type-checked with the rest.
 *
 * Run: deno run --allow-ffi --unstable-webgpu examples/webgpu_upload.ts camera
 *
 * The one thing to get right is `bytesPerRow`: surfaceport pads every row to
 * 64 bytes (`surface.planes[i].bytesPerRow`), so a 1918-pixel-wide BGRA row is
 * 7680 bytes, not 7672. Pass the plane's own `bytesPerRow` and `writeTexture`
 * skips the padding. (Only buffer-to-texture copies need 256-byte rows;
 * `writeTexture` does not.)
 *
 * @module
 */
import { connect, type Surface, toRGBA } from "@surfaceport/surfaceport";

/** Uploads one plane of `surface` into `texture` (whose size is the plane's). */
function uploadPlane(device: GPUDevice, texture: GPUTexture, surface: Surface, plane: number) {
  const { width, height, bytesPerRow } = surface.planes[plane];
  device.queue.writeTexture(
    { texture },
    surface.bytes(plane), // a view of the shared memory itself
    { offset: 0, bytesPerRow, rowsPerImage: height },
    { width, height },
  );
}

const adapter = await navigator.gpu.requestAdapter();
if (!adapter) {
  throw new Error("no WebGPU adapter (run with --unstable-webgpu on a machine with a GPU)");
}
const device = await adapter.requestDevice();
const usage = GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST;

using channel = await connect(Deno.args[0] ?? "camera", { timeout: 5000 });
for await (const frame of channel) {
  const { surface } = frame;
  const size = { width: surface.width, height: surface.height };
  if (surface.format === "BGRA" || surface.format === "RGBA") {
    // One texture in the surface's own byte order: no conversion at all.
    const format = surface.format === "BGRA" ? "bgra8unorm" : "rgba8unorm";
    const texture = device.createTexture({ size, format, usage });
    uploadPlane(device, texture, surface, 0);
  } else if (surface.format === "420v" || surface.format === "420f") {
    // NV12: luma as r8unorm, interleaved CbCr at half size as rg8unorm; a shader converts
    // with the matrix of your choice (see YCBCR_MATRICES).
    const luma = device.createTexture({ size, format: "r8unorm", usage });
    const chroma = device.createTexture({
      size: { width: surface.width / 2, height: surface.height / 2 },
      format: "rg8unorm",
      usage,
    });
    uploadPlane(device, luma, surface, 0);
    uploadPlane(device, chroma, surface, 1);
  } else {
    // Anything else: convert to tightly packed RGBA first (rows of exactly width * 4 bytes).
    const texture = device.createTexture({ size, format: "rgba8unorm", usage });
    device.queue.writeTexture({ texture }, toRGBA(frame), { bytesPerRow: surface.width * 4 }, size);
  }
  // writeTexture has copied the bytes by the time it returns: the frame can go back at once.
  frame.close();
}
