// One stream being played: chunks in, units assembled and handed to the audio or video
// output, counters kept.

import { FLAG } from './wire.js';
import { DEFAULT_MAX_UNITS } from './playout.js';
import { AudioOut } from './audio.js';
import { VideoOut } from './video.js';
import { MseOut } from './mse.js';
import { $, describe, disableControls, setState, showStats, stats } from './ui.js';

export class Player {
  // `cancel()` tells the server to stop the stream.
  constructor(stream, codec, opened, path, estimate, cancel) {
    this.stream = stream;
    this.codec = codec;
    this.path = path;
    this.cancel = cancel;
    const num = (v) => (v === null ? null : Number(v));
    // Whole-file figures from the first open (a resumed open's may count from where it began).
    this.durationUs = estimate ? estimate.durationUs : num(opened.duration_us);
    this.chunkCount = estimate ? estimate.chunks : num(opened.chunk_count);
    this.nextSeq = Number(opened.start_seq);
    this.parts = [];        // payloads of the unit being assembled
    this.partsKey = true;
    this.pending = 0;       // units scheduled and not yet played
    this.done = false;      // END_OF_STREAM or CLOSE seen
    this.stopped = false;
    this.lastTransit = null;
    this.rateBytes = 0;
    this.rateSince = performance.now();
    const canvas = $('video'), img = $('image'), mse = $('mse');
    // Fragmented MP4 (live, or a progressive MP4 the server fragments) plays in a <video>
    // through Media Source Extensions; other video is drawn on the canvas.
    const fmp4 = codec.kind === 'video' && codec.format === 'fmp4';
    canvas.hidden = codec.kind !== 'video' || fmp4;
    mse.hidden = !fmp4;
    img.hidden = true;
    // The black box is for pictures only; audio shows just its controls and stats.
    $('stage').hidden = codec.kind !== 'video' && codec.kind !== 'image';
    if (fmp4) {
      this.mse = new MseOut(mse, path.startsWith('live/'), (m) => this.finish(m));
      this.mse.setVolume(stats.volume);
    } else if (codec.kind === 'video') this.video = new VideoOut(canvas, codec);
    if (codec.kind === 'audio') this.audio = new AudioOut(codec, stats.volume);
    $('now').textContent = path + ' — '
      + describe({ path, codec, duration_us: opened.duration_us, viewers: 0 });
    this.statsTimer = setInterval(() => this.showStats(), 250);
  }

  chunk(c) {
    if (this.stopped) return;
    stats.chunks++;
    stats.bytes += c.payload.length;
    this.rateBytes += c.payload.length;
    // Without a payload CRC (HEADER_CRC) nothing here would check the bytes: the page verifies
    // no tree, and never asks for such chunks.
    if (!c.crc_ok || (c.flags & FLAG.HEADER_CRC)) { stats.crcFailures++; this.breakUnit(); return; }
    // The page does not ask for lz4 (HELLO without the LZ4 capability).
    if (c.flags & FLAG.COMPRESSED) { stats.drops++; this.breakUnit(); return; }
    const seq = Number(c.seq);
    if (seq < this.nextSeq) return; // duplicate or stale
    if (seq > this.nextSeq) { stats.gaps += seq - this.nextSeq; this.breakUnit(); }
    this.nextSeq = seq + 1;
    const image = this.codec.kind === 'image';
    if (c.flags & FLAG.INIT && this.mse) this.mse.initChunk(c.payload);
    else if (!(c.flags & FLAG.INIT) || image) {
      if (!this.parts.length) this.unitKey = (c.flags & FLAG.KEY) !== 0;
      this.parts.push(c.payload.slice());
      if (c.flags & FLAG.END_OF_UNIT && !image) {
        const unit = concat(this.parts);
        this.parts = [];
        if (this.partsKey) this.unit(unit, Number(c.pts_us), c.duration_us);
        this.partsKey = true;
      }
    }
    if (c.flags & FLAG.END_OF_STREAM) {
      if (image) this.showImage(concat(this.parts));
      this.finish(null);
    }
  }

  // The next chunk is `seq`, a deliberate jump (a live channel over HTTP taken up at a
  // segment's start, or its init chunks before it), not a gap: a unit half assembled is let go.
  resync(seq) {
    this.nextSeq = seq;
    this.parts = [];
    this.partsKey = true;
  }

  // A lost chunk: the unit being assembled is incomplete and cannot be shown.
  breakUnit() {
    if (this.parts.length) stats.drops++;
    this.parts = [];
    this.partsKey = false;
  }

  unit(bytes, ptsUs, durationUs) {
    stats.unitsReceived++;
    if (stats.firstPtsUs === null) stats.firstPtsUs = ptsUs;
    if (this.pending >= DEFAULT_MAX_UNITS) { stats.drops++; return; }
    // Jitter (RFC 3550 style): variation of (arrival - timestamp) between units.
    const transit = performance.now() - ptsUs / 1000;
    if (this.lastTransit !== null) {
      stats.jitterMs += (Math.abs(transit - this.lastTransit) - stats.jitterMs) / 16;
    }
    this.lastTransit = transit;
    if (this.mse) {
      // Handed to the browser's decoder, which plays it on the <video>'s own clock.
      this.mse.fragment(bytes, this.unitKey);
      stats.unitsPlayed++;
      stats.lastPtsUs = ptsUs;
    } else if (this.audio) {
      this.pending++;
      const scheduled = this.audio.play(bytes, ptsUs, durationUs, () => {
        if (this.stopped) return;
        stats.unitsPlayed++;
        this.pending--;
        this.maybeEnded();
      });
      if (scheduled) stats.lastPtsUs = ptsUs;
      else { this.pending--; stats.drops++; }
    } else if (this.video) {
      this.pending++;
      this.video.play(bytes, ptsUs, durationUs, (drawn) => {
        this.pending--;
        if (drawn) { stats.lastPtsUs = ptsUs; stats.unitsPlayed++; } else stats.drops++;
        this.maybeEnded();
      });
    }
  }

  showImage(bytes) {
    const img = $('image');
    const type = 'image/' + this.codec.format;
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = URL.createObjectURL(new Blob([bytes], { type }));
    img.src = this.url;
    img.hidden = false;
    stats.unitsReceived = 1;
    stats.unitsPlayed = 1;
  }

  // Files with a duration can be paused and sought (by reopening at a chunk); live cannot.
  seekable() {
    // A fragmented stream resumed mid-way would lack its init segment: not seekable here.
    return !this.path.startsWith('live/') && this.codec.kind !== 'image' && !this.mse
      && this.durationUs > 0 && this.chunkCount > 0;
  }

  estimate() {
    return { durationUs: this.durationUs, chunks: this.chunkCount };
  }

  setVolume(v) {
    if (this.audio) this.audio.setVolume(v);
    if (this.mse) this.mse.setVolume(v);
  }
  gain() { return this.audio ? this.audio.volume() : null; }

  finish(error) {
    if (this.done) return;
    this.done = true;
    if (error) { stats.error = error; setState('error', this.path + ': ' + error); }
    else if (this.mse) this.mse.end();
    this.maybeEnded();
  }

  maybeEnded() {
    if (!this.done || this.pending > 0 || this.stopped || stats.ended) return;
    stats.ended = true;
    this.showStats();
    clearInterval(this.statsTimer);
    if (stats.state !== 'error') setState('ended', 'finished ' + this.path);
    disableControls();
  }

  // Stops playing; `cancel` also tells the server (unless the stream already ended).
  stop(cancel) {
    if (this.stopped) return;
    if (cancel && !this.done) this.cancel();
    this.stopped = true;
    clearInterval(this.statsTimer);
    if (this.video) this.video.stop();
    if (this.mse) this.mse.stop();
    if (this.audio) this.audio.close();
    disableControls();
  }

  showStats() {
    const now = performance.now();
    const secs = (now - this.rateSince) / 1000;
    if (secs >= 1) {
      stats.bitrateKbps = Math.round((this.rateBytes * 8) / secs / 1000);
      this.rateBytes = 0;
      this.rateSince = now;
    }
    if (this.mse) {
      const v = $('mse'), b = v.buffered;
      stats.bufferMs = b.length ? Math.round((b.end(b.length - 1) - v.currentTime) * 1000) : 0;
      stats.mseTime = v.currentTime;
      stats.mseFrames = v.getVideoPlaybackQuality().totalVideoFrames;
    } else if (this.audio) stats.bufferMs = this.audio.bufferedMs();
    else if (this.video) {
      stats.bufferMs = this.pending * Math.round(1000 * this.codec.fps_den / (this.codec.fps_num || 25));
    }
    showStats();
  }
}

function concat(parts) {
  if (parts.length === 1) return parts[0];
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}
