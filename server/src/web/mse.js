// Fragmented MP4 through Media Source Extensions: the stream's INIT chunks are the init
// segment, each unit one fragment (moof + mdat). Files come this way too: a progressive MP4
// is opened with the FRAGMENT flag and the server fragments it (PROTOCOL.md §4.8).

// Fragments waiting while the SourceBuffer is busy; beyond this the queue is dropped up to
// the next keyframe (a viewer that cannot keep up skips rather than falls further behind).
export const MAX_QUEUED = 64;
// Seconds of played media kept behind the playhead; older ranges are removed.
export const KEEP_BEHIND_S = 10;
// Live: a playhead more than this many seconds behind the buffered end jumps near the end.
export const LIVE_MAX_LAG_S = 3;
// Live: where to jump to, in seconds before the buffered end.
export const LIVE_TARGET_S = 0.5;
// The largest init segment taken (the Rust side's MAX_MOOV_BYTES is 64 MiB for a whole file's
// tables; an init segment has none): beyond it the stream is refused, not buffered.
export const MAX_INIT_BYTES = 16 << 20;

// Whether the browser can play fragmented MP4 at all (the codecs are checked at the init).
export function msePlayable() {
  return typeof MediaSource !== 'undefined';
}

// Box walk over `bytes[from, to)`: yields [type, bodyStart, end].
function* boxes(bytes, from, to) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = from;
  while (at + 8 <= to) {
    let size = dv.getUint32(at);
    let header = 8;
    if (size === 1) {
      if (at + 16 > to) return;
      size = Number(dv.getBigUint64(at + 8));
      header = 16;
    } else if (size === 0) size = to - at;
    if (size < header || at + size > to) return;
    const type = String.fromCharCode(bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]);
    yield [type, at + header, at + size];
    at += size;
  }
}

function child(bytes, from, to, type) {
  for (const b of boxes(bytes, from, to)) if (b[0] === type) return b;
  return null;
}

const hex2 = (n) => n.toString(16).padStart(2, '0');

// The MIME type with codecs for an init segment, from its sample entries: avcC gives
// `avc1.PPCCLL`, esds gives `mp4a.OO.A` (object type, audio object type); null if no track
// is recognised.
export function mimeOfInit(bytes) {
  const moov = child(bytes, 0, bytes.length, 'moov');
  if (!moov) return null;
  const codecs = [];
  let video = false;
  for (const [type, s, e] of boxes(bytes, moov[1], moov[2])) {
    if (type !== 'trak') continue;
    let box = [null, s, e];
    for (const t of ['mdia', 'minf', 'stbl', 'stsd']) {
      box = child(bytes, box[1], box[2], t);
      if (!box) break;
    }
    if (!box) continue;
    // stsd: version/flags and an entry count, then the sample entries.
    for (const [fmt, es, ee] of boxes(bytes, box[1] + 8, box[2])) {
      if (fmt === 'avc1' || fmt === 'avc3') {
        // A visual sample entry has 78 bytes before its child boxes.
        const avcc = child(bytes, es + 78, ee, 'avcC');
        if (!avcc) continue;
        const p = avcc[1];
        codecs.push(fmt + '.' + hex2(bytes[p + 1]) + hex2(bytes[p + 2]) + hex2(bytes[p + 3]));
        video = true;
      } else if (fmt === 'hvc1' || fmt === 'hev1') {
        codecs.push(fmt);
        video = true;
      } else if (fmt === 'mp4a') {
        // An audio sample entry has 28 bytes before its child boxes.
        const esds = child(bytes, es + 28, ee, 'esds');
        codecs.push(esds ? mp4aCodec(bytes, esds[1] + 4, esds[2]) : 'mp4a.40.2');
      } else if (fmt === 'Opus') {
        codecs.push('opus');
      }
    }
  }
  if (!codecs.length) return null;
  return (video ? 'video' : 'audio') + '/mp4; codecs="' + codecs.join(',') + '"';
}

// `mp4a.OO.A` from an ES descriptor: the DecoderConfigDescriptor's object type and the
// AudioSpecificConfig's first five bits.
function mp4aCodec(bytes, from, to) {
  let oti = 0x40, aot = 2;
  const len = (at) => { // descriptor sizes: up to four 7-bit groups
    let n = 0, i = 0;
    for (; i < 4 && at + i < to; i++) { n = (n << 7) | (bytes[at + i] & 0x7f); if (!(bytes[at + i] & 0x80)) { i++; break; } }
    return [n, i];
  };
  let at = from;
  if (bytes[at] !== 0x03) return 'mp4a.40.2';
  at += 1 + len(at + 1)[1] + 3; // ES_ID, flags (no optional fields from ffmpeg)
  if (bytes[at] !== 0x04) return 'mp4a.40.2';
  const [, n4] = len(at + 1);
  at += 1 + n4;
  oti = bytes[at];
  at += 13;
  if (bytes[at] === 0x05) {
    const [, n5] = len(at + 1);
    aot = bytes[at + 1 + n5] >> 3;
  }
  return 'mp4a.' + hex2(oti) + '.' + aot;
}

export class MseOut {
  // `video`: the <video> element; `live`: keep near the live edge.
  constructor(video, live, onError) {
    this.video = video;
    this.live = live;
    this.onError = onError;
    this.initParts = [];   // INIT chunks since the last unit
    this.initBytes = 0;
    this.init = null;      // the init segment in use
    this.queue = [];       // segments waiting for the SourceBuffer
    this.sb = null;
    this.ms = null;
    this.ended = false;
    this.stopped = false;
    this.appended = 0;     // fragments appended
    this.needKey = false;  // the queue overflowed: wait for a keyframe
  }

  // One INIT chunk's payload.
  initChunk(bytes) {
    if (this.stopped) return;
    this.initBytes += bytes.length;
    if (this.initBytes > MAX_INIT_BYTES) {
      this.initParts = [];
      this.stopped = true;
      this.onError(`an init segment of more than ${MAX_INIT_BYTES} bytes`);
      return;
    }
    this.initParts.push(bytes.slice());
  }

  // One whole fragment.
  fragment(bytes, key) {
    if (this.stopped) return;
    if (this.initParts.length) {
      const init = concat(this.initParts);
      this.initParts = [];
      this.initBytes = 0;
      if (!this.init || !same(init, this.init)) this.start(init);
    }
    if (!this.init) return; // no init segment yet: nothing can decode this
    if (this.needKey && !key) return;
    this.needKey = false;
    if (this.queue.length >= MAX_QUEUED) {
      this.queue = this.queue.filter((q) => q.init);
      this.needKey = !key;
      if (!key) return;
    }
    this.queue.push({ bytes, init: false });
    this.pump();
  }

  start(init) {
    this.init = init;
    if (this.sb) { this.queue.push({ bytes: init, init: true }); this.pump(); return; }
    const mime = mimeOfInit(init);
    if (!mime || !MediaSource.isTypeSupported(mime)) {
      this.onError('this browser cannot play ' + (mime || 'this fragmented MP4'));
      return;
    }
    this.mime = mime;
    this.ms = new MediaSource();
    this.video.src = URL.createObjectURL(this.ms);
    this.ms.addEventListener('sourceopen', () => {
      if (this.stopped) return;
      URL.revokeObjectURL(this.video.src);
      this.sb = this.ms.addSourceBuffer(mime);
      this.sb.mode = 'segments';
      this.sb.addEventListener('updateend', () => this.pump());
      this.sb.addEventListener('error', () => this.onError('the browser could not decode the stream'));
      this.queue.unshift({ bytes: init, init: true });
      this.pump();
    }, { once: true });
  }

  // Ends the stream once everything queued is appended (a file's end).
  end() { this.ended = true; this.pump(); }

  pump() {
    if (this.stopped || !this.sb || this.sb.updating) return;
    if (this.trim()) return;
    const next = this.queue.shift();
    if (!next) {
      if (this.ended && this.ms.readyState === 'open') this.ms.endOfStream();
      return;
    }
    try {
      this.sb.appendBuffer(next.bytes);
      if (!next.init) this.appended++;
    } catch (e) {
      // QuotaExceededError: the buffer is full; drop what is behind and retry later.
      this.queue.unshift(next);
      this.trim(true);
      return;
    }
    this.follow();
  }

  // Removes media well behind the playhead; true if a removal started.
  trim(force) {
    const b = this.sb.buffered;
    if (!b.length) return false;
    const t = this.video.currentTime;
    const cut = t - (force ? 1 : KEEP_BEHIND_S);
    if (cut > b.start(0) + 1) {
      this.sb.remove(b.start(0), cut);
      return true;
    }
    return false;
  }

  // Starts playback at the first buffered frame; live, stays near the edge.
  follow() {
    const v = this.video, b = v.buffered;
    if (!b.length) return;
    const start = b.start(0), end = b.end(b.length - 1);
    if (v.currentTime < start) v.currentTime = start;
    if (this.live && end - v.currentTime > LIVE_MAX_LAG_S) {
      v.currentTime = Math.max(start, end - LIVE_TARGET_S);
    }
    if (v.paused && !this.pausedByUser) {
      v.play().catch(() => { v.muted = true; v.play().catch(() => {}); });
    }
  }

  setVolume(x) { this.video.volume = Math.max(0, Math.min(1, x)); }

  stop() {
    this.stopped = true;
    this.queue = [];
    this.video.pause();
    this.video.removeAttribute('src');
    this.video.load();
  }
}

function same(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
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
