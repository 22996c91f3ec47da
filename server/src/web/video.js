// Pictures: MJPEG and Y4M frames drawn on a canvas by the playout rules (playout.js), and
// still images.

import { PlayoutClock } from './playout.js';
import { msePlayable } from './mse.js';

// Whether the page can show this video or image codec.
export function visualPlayable(c) {
  if (c.kind === 'video' && (c.format === 'fmp4' || c.format === 'mp4')) return msePlayable();
  if (c.kind === 'video') return c.format === 'mjpeg' || c.format === 'y4m';
  if (c.kind === 'image') return ['png', 'jpeg', 'gif', 'bmp', 'webp'].includes(c.format);
  return false;
}

export class VideoOut {
  constructor(canvas, codec) {
    this.codec = codec;
    canvas.width = codec.width;
    canvas.height = codec.height;
    this.ctx2d = canvas.getContext('2d');
    this.clock = new PlayoutClock();
    this.timers = new Set();
    this.stopped = false;
  }

  // Decodes one frame and draws it at its play instant. `done(drawn)` runs once: true when
  // drawn, false when dropped (late on arrival, a later frame already drawn, or undecodable).
  play(bytes, ptsUs, durationUs, done) {
    const now = performance.now();
    if (this.clock.late(ptsUs, now)) { done(false); return; }
    const due = this.clock.due(ptsUs, now);
    const prepare = this.codec.format === 'mjpeg'
      ? createImageBitmap(new Blob([bytes], { type: 'image/jpeg' }))
      : Promise.resolve().then(() => yuv420ToImage(bytes, this.codec.width, this.codec.height));
    prepare.then((frame) => {
      if (this.stopped) return;
      const t = setTimeout(() => {
        this.timers.delete(t);
        if (this.stopped) return;
        // A later frame drawn first (its decode was quicker) took this one's slot.
        if (this.clock.late(ptsUs, due)) { done(false); return; }
        if (frame instanceof ImageData) this.ctx2d.putImageData(frame, 0, 0);
        else { this.ctx2d.drawImage(frame, 0, 0); frame.close(); }
        this.clock.played(ptsUs, durationUs);
        done(true);
      }, Math.max(0, due - performance.now()));
      this.timers.add(t);
    }, () => { if (!this.stopped) done(false); });
  }

  stop() {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
  }
}

// One Y4M frame (4:2:0, full-range BT.601 as C420jpeg says) to RGBA.
export function yuv420ToImage(bytes, w, h) {
  // The unit may still carry its `FRAME…\n` line.
  if (bytes.length > 5 && bytes[0] === 0x46 && bytes[1] === 0x52 && bytes[2] === 0x41) {
    bytes = bytes.subarray(bytes.indexOf(0x0a) + 1);
  }
  const cw = (w + 1) >> 1, chh = (h + 1) >> 1;
  if (bytes.length < w * h + 2 * cw * chh) throw new Error('short Y4M frame');
  const image = new ImageData(w, h);
  const d = image.data;
  const uo = w * h, vo = uo + cw * chh;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const Y = bytes[y * w + x];
      const ci = (y >> 1) * cw + (x >> 1);
      const U = bytes[uo + ci] - 128, V = bytes[vo + ci] - 128;
      const o = (y * w + x) * 4;
      d[o] = Y + 1.402 * V;
      d[o + 1] = Y - 0.344136 * U - 0.714136 * V;
      d[o + 2] = Y + 1.772 * U;
      d[o + 3] = 255;
    }
  }
  return image;
}
