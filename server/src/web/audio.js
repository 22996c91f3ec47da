// Sound: PCM units scheduled on a Web Audio clock by the playout rules (playout.js).

import { PlayoutClock } from './playout.js';

// Whether the page can play this audio codec: linear PCM of these widths.
export function audioPlayable(c) {
  return (c.sample_format === 'int' && [8, 16, 24, 32].includes(c.bits_per_sample))
    || (c.sample_format === 'float' && [32, 64].includes(c.bits_per_sample));
}

export class AudioOut {
  constructor(codec, volume) {
    this.codec = codec;
    this.ctx = new AudioContext({ sampleRate: codec.sample_rate, latencyHint: 'interactive' });
    this.gain = this.ctx.createGain();
    this.gain.gain.value = volume;
    this.gain.connect(this.ctx.destination);
    this.ctx.resume();
    this.clock = new PlayoutClock();
    this.lastEndMs = null;
  }

  nowMs() { return this.ctx.currentTime * 1000; }

  // Schedules one unit; false if it is a late drop. `onPlayed` runs once it has played.
  play(bytes, ptsUs, durationUs, onPlayed) {
    const now = this.nowMs();
    if (this.clock.late(ptsUs, now)) return false;
    const when = this.clock.due(ptsUs, now) / 1000;
    this.clock.played(ptsUs, durationUs);
    const c = this.codec;
    const pcm = decodePcm(bytes, c);
    const frames = pcm[0].length;
    if (!frames) { onPlayed(); return true; }
    const buffer = this.ctx.createBuffer(c.channels, frames, c.sample_rate);
    for (let ch = 0; ch < c.channels; ch++) buffer.copyToChannel(pcm[ch], ch);
    const src = this.ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(this.gain);
    src.start(when);
    this.lastEndMs = when * 1000 + (frames / c.sample_rate) * 1000;
    src.onended = onPlayed;
    return true;
  }

  // Milliseconds of sound scheduled and not yet played.
  bufferedMs() {
    return this.lastEndMs === null ? 0 : Math.max(0, Math.round(this.lastEndMs - this.nowMs()));
  }

  setVolume(v) { this.gain.gain.value = v; }
  volume() { return this.gain.gain.value; }
  close() { this.ctx.close(); }
}

// PCM (interleaved, little-endian as WAV stores it) to one Float32Array per channel.
export function decodePcm(bytes, c) {
  const bits = c.bits_per_sample;
  const float = c.sample_format === 'float';
  const width = bits / 8;
  const frames = Math.floor(bytes.length / (width * c.channels));
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = [];
  for (let ch = 0; ch < c.channels; ch++) out.push(new Float32Array(frames));
  let p = 0;
  for (let i = 0; i < frames; i++) {
    for (let ch = 0; ch < c.channels; ch++, p += width) {
      let v;
      if (float) v = bits === 64 ? dv.getFloat64(p, true) : dv.getFloat32(p, true);
      else if (bits === 8) v = (bytes[p] - 128) / 128;
      else if (bits === 16) v = dv.getInt16(p, true) / 32768;
      else if (bits === 24) v = (((bytes[p] | (bytes[p + 1] << 8) | (bytes[p + 2] << 16)) << 8) >> 8) / 8388608;
      else v = dv.getInt32(p, true) / 2147483648;
      out[ch][i] = v;
    }
  }
  return out;
}
